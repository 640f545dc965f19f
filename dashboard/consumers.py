"""Websockets of the operator console. Every one needs an authenticated staff session."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.live import INBOX_GROUP, call_group
from orchestrator.live import task_group


class StaffGroupConsumer(AsyncJsonWebsocketConsumer):
    """Refuses anyone but active staff (close code 4403), then joins ``group_name()``."""

    def group_name(self) -> str:
        raise LookupError("subclasses name their group")

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.is_active and user.is_staff) or not (
            await database_sync_to_async(user.has_perm)("dashboard.use_console")
        ):
            await self.close(code=4403)
            return
        self.group = self.group_name()
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)


class TaskUpdatesConsumer(StaffGroupConsumer):
    def group_name(self) -> str:
        return task_group(self.scope["url_route"]["kwargs"]["task_id"])

    async def task_update(self, message: dict) -> None:
        await self.send_json(message["data"])


class InboxConsumer(StaffGroupConsumer):
    """``ws/inbox/``: a conversation arrived or changed; the page refreshes its list."""

    def group_name(self) -> str:
        return INBOX_GROUP

    async def inbox_update(self, message: dict) -> None:
        await self.send_json(message)


class CallConsumer(StaffGroupConsumer):
    """``ws/calls/<task_id>/``: the voice agent's ``call.turn`` and ``call.status`` messages."""

    def group_name(self) -> str:
        return call_group(self.scope["url_route"]["kwargs"]["task_id"])

    async def call_turn(self, message: dict) -> None:
        await self.send_json({"type": "call.turn", "turn": message["turn"]})

    async def call_status(self, message: dict) -> None:
        await self.send_json({"type": "call.status", "status": message["status"]})
