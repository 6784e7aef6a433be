"""WebSocket consumers: one per page kind, authenticated, joined to their groups."""

import asyncio

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from console.live.events import DASHBOARD_GROUP, attach_server_loop, instance_group


class _EventConsumer(AsyncJsonWebsocketConsumer):
    def groups_for(self) -> list[str]:
        raise NotImplementedError

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        attach_server_loop(asyncio.get_running_loop())
        self.joined = self.groups_for()
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def console_event(self, message: dict) -> None:
        await self.send_json({"type": message["event"], "instance": message["instance"], "data": message["data"]})


class DashboardConsumer(_EventConsumer):
    def groups_for(self) -> list[str]:
        return [DASHBOARD_GROUP]


class InstanceConsumer(_EventConsumer):
    def groups_for(self) -> list[str]:
        return [instance_group(self.scope["url_route"]["kwargs"]["name"])]
