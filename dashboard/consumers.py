"""Live task updates for the operator console (staff only)."""

from __future__ import annotations

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from orchestrator.live import task_group


class TaskUpdatesConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.is_staff):
            await self.close(code=4403)
            return
        self.group = task_group(self.scope["url_route"]["kwargs"]["task_id"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def task_update(self, message: dict) -> None:
        await self.send_json(message["data"])
