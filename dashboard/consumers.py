"""Websockets of the operator console.

``TicketAuthMiddleware`` (dashboard.live_auth) puts the ticket's user in the scope; a socket
without an active staff user holding ``dashboard.use_console`` is refused (close code 4403,
before the handshake completes: HTTP 403).
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.access import VIEW_BROADCASTS
from dashboard.live import broadcast_group
from dashboard.live_auth import user_may_watch
from orchestrator.live import CALLS_GROUP, HEALTH_GROUP, INBOX_GROUP, call_group, task_group


def _may(user, perm: str) -> bool:
    return user_may_watch(user) and (not perm or user.has_perm(perm))


class StaffGroupConsumer(AsyncJsonWebsocketConsumer):
    """Refuses anyone but active staff with the console permission (and ``permission``, when a
    subclass names one), then joins ``group_name()``."""

    permission = ""

    def group_name(self) -> str:
        raise LookupError("subclasses name their group")

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (user and user.is_authenticated and await database_sync_to_async(_may)(user, self.permission)):
            await self.close(code=4403)
            return
        self.group = self.group_name()
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)


class TaskUpdatesConsumer(StaffGroupConsumer):
    """``ws/tasks/<task_id>/``: every transition of the task (and recorded stale callbacks)."""

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


class CallsConsumer(StaffGroupConsumer):
    """``ws/calls/``: a call task moved (dialled, answered, finished): the live list refreshes."""

    def group_name(self) -> str:
        return CALLS_GROUP

    async def calls_update(self, message: dict) -> None:
        await self.send_json(message)


class HealthConsumer(StaffGroupConsumer):
    """``ws/health/``: an agent's worker started beating or stopped (registry health changed)."""

    def group_name(self) -> str:
        return HEALTH_GROUP

    async def health_update(self, message: dict) -> None:
        await self.send_json(message)


class CallConsumer(StaffGroupConsumer):
    """``ws/calls/<task_id>/``: the voice agent's ``call.turn`` and ``call.status`` messages."""

    def group_name(self) -> str:
        return call_group(self.scope["url_route"]["kwargs"]["task_id"])

    async def call_turn(self, message: dict) -> None:
        await self.send_json({"type": "call.turn", "turn": message["turn"]})

    async def call_status(self, message: dict) -> None:
        await self.send_json({"type": "call.status", "status": message["status"]})


class BroadcastConsumer(StaffGroupConsumer):
    """``ws/broadcasts/<id>/``: the broadcast's counts changed (a batch sent, callbacks applied,
    paused, resumed, cancelled, completed): the page fetches its progress again."""

    permission = VIEW_BROADCASTS

    def group_name(self) -> str:
        return broadcast_group(self.scope["url_route"]["kwargs"]["broadcast_id"])

    async def broadcast_progress(self, message: dict) -> None:
        await self.send_json({"type": "broadcast.progress", "broadcast_id": message["broadcast_id"]})
