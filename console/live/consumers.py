"""WebSocket consumers: one per page kind, authenticated, joined to their groups.

Each connection sends from its own bounded queue: when a browser reads too
slowly the oldest events are dropped, so it never holds up the channel layer,
the samplers or the other browsers.

A socket lives only as long as what opened it: it is closed (4401) when its session ends — logout,
expiry, deletion — and (4403) when its user is deactivated or loses the role that may see
instances. Logouts and role changes are told to the user's sockets at once (apps.py); every socket
also checks again every CONSOLE_WS_RECHECK_SECONDS, which catches expiry and changes made in SQL.
"""

import asyncio
import contextlib
from collections import deque
from importlib import import_module

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import SessionBase

from console.live.events import DASHBOARD_GROUP, attach_server_loop, instance_group, user_group

BUFFER_EVENTS = 100
VIEW = "instances.view_instance"
SIGNED_OUT, NOT_ALLOWED = 4401, 4403


def _standing(user_id: int, session_key: str | None) -> int | None:
    """None while the session is alive and its user may see instances; else the close code."""
    store: SessionBase = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    if not session_key or str(store.load().get("_auth_user_id")) != str(user_id):
        return SIGNED_OUT
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None or not user.is_active or not user.has_perm(VIEW):
        return NOT_ALLOWED
    return None


class _EventConsumer(AsyncWebsocketConsumer):
    """One way, server to browser: what a client sends is dropped unread (AsyncWebsocketConsumer's
    receive), never decoded, so no frame of any shape can end the socket with a server error."""

    def groups_for(self) -> list[str]:
        raise NotImplementedError

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=SIGNED_OUT)
            return
        self.user_id, self.session_key = user.pk, self.scope["session"].session_key
        refusal = await database_sync_to_async(_standing)(self.user_id, self.session_key)
        if refusal:
            await self.close(code=refusal)
            return
        attach_server_loop(asyncio.get_running_loop())
        self.pending: deque = deque(maxlen=BUFFER_EVENTS)
        self.dropped = 0
        self.wakeup = asyncio.Event()
        self.joined = [*self.groups_for(), user_group(self.user_id)]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        self.tasks = [asyncio.create_task(self._send_pending()), asyncio.create_task(self._recheck_every())]

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        for task in getattr(self, "tasks", []):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def console_recheck(self, message: dict) -> None:
        await self._recheck()

    async def _recheck(self) -> None:
        refusal = await database_sync_to_async(_standing)(self.user_id, self.session_key)
        if refusal:
            await self.close(code=refusal)

    async def _recheck_every(self) -> None:
        while True:
            await asyncio.sleep(settings.CONSOLE_WS_RECHECK_SECONDS)
            await self._recheck()

    async def console_event(self, message: dict) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(message["text"])  # encoded once by the sender (events.py)
        self.wakeup.set()

    async def _send_pending(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                await self.send(text_data=self.pending.popleft())


class DashboardConsumer(_EventConsumer):
    def groups_for(self) -> list[str]:
        return [DASHBOARD_GROUP]


class InstanceConsumer(_EventConsumer):
    def groups_for(self) -> list[str]:
        return [instance_group(self.scope["url_route"]["kwargs"]["name"])]
