"""WebSocket consumers: one per page kind, authenticated, joined to their groups.

Each connection sends from its own bounded queue: when a browser reads too
slowly the oldest events are dropped, so it never holds up the channel layer,
the samplers or the other browsers.
"""

import asyncio
import contextlib
from collections import deque

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from console.live.events import DASHBOARD_GROUP, attach_server_loop, instance_group

BUFFER_EVENTS = 100


class _EventConsumer(AsyncJsonWebsocketConsumer):
    def groups_for(self) -> list[str]:
        raise NotImplementedError

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        attach_server_loop(asyncio.get_running_loop())
        self.pending: deque = deque(maxlen=BUFFER_EVENTS)
        self.dropped = 0
        self.wakeup = asyncio.Event()
        self.joined = self.groups_for()
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        self.sender = asyncio.create_task(self._send_pending())

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        sender = getattr(self, "sender", None)
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def console_event(self, message: dict) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append({"type": message["event"], "instance": message["instance"], "data": message["data"]})
        self.wakeup.set()

    async def _send_pending(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                await self.send_json(self.pending.popleft())


class DashboardConsumer(_EventConsumer):
    def groups_for(self) -> list[str]:
        return [DASHBOARD_GROUP]


class InstanceConsumer(_EventConsumer):
    def groups_for(self) -> list[str]:
        return [instance_group(self.scope["url_route"]["kwargs"]["name"])]
