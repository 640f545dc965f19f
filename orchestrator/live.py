"""Push task changes to the console's websocket groups, after the change is committed.

With the Redis channel layer, updates go through one long-lived event loop per process
(a daemon thread) that sends them in order over the layer's pooled connections. Calling
``async_to_sync(layer.group_send)`` per update instead builds a new event loop and opens a
new Redis connection every time, which cost a worker more than the database work of the
transition it reports. The in-memory layer (embedded default) is sent to directly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


# The console's groups. The orchestrator owns their names so that agents (which import the
# orchestrator, never the dashboard) can publish to them.
INBOX_GROUP = "inbox"  # inbound conversations arrived or changed
CALLS_GROUP = "calls"  # a call task moved: the live calls list
HEALTH_GROUP = "health"  # an agent's health changed
LIST_CHANNELS = {"voice": CALLS_GROUP}  # channels whose every task transition a list page watches


def task_group(task_id: Any) -> str:
    return f"task.{task_id}"


def call_group(task_id: Any) -> str:
    """The voice agent pushes ``call.turn`` / ``call.status`` messages to this group."""
    return f"call.{task_id}"


def publish_task_update(task_id: Any, data: dict[str, Any], *, channel: str = "") -> None:
    """Send ``data`` to the task's group once the surrounding transaction commits (and, for a
    call, to the live calls list).

    Live updates are a convenience: a failure to publish is logged, never raised.
    """
    list_group = LIST_CHANNELS.get(channel)

    def send() -> None:
        send_group(task_group(task_id), {"type": "task.update", "data": data})
        if list_group:
            send_group(
                list_group, {"type": "calls.update", "task_id": str(task_id), "status": data.get("status")}
            )

    transaction.on_commit(send)


def publish_inbox_update(
    task_id: Any, *, reason: str = "changed", contact_id: Any = None, by: Any = None
) -> None:
    """Tell every open inbound-queue page (and the open conversation) that a conversation
    arrived or changed, after commit. The messaging agent calls it when it stores an inbound
    message; the console on claim, release, reply and resolve."""
    message = {"type": "inbox.update", "task_id": str(task_id), "reason": reason}
    if contact_id is not None:
        message["contact_id"] = str(contact_id)
    if by is not None:  # the operator who claimed, released or resolved it
        message["by"] = str(by)
    transaction.on_commit(lambda: send_group(INBOX_GROUP, message))


def publish_health_update(*, agent: str, state: str) -> None:
    """An agent's workers started or stopped beating: the health page refreshes."""
    send_group(HEALTH_GROUP, {"type": "health.update", "agent": agent, "state": state})


def send_group(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer):
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            log.warning("live update to %s not sent", group, exc_info=True)
        return
    _sender.send(layer, group, message)


class _OrderedSender:
    """One event loop thread per process; updates are sent one after another, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._drainer: asyncio.Task | None = None

    def send(self, layer, group: str, message: dict[str, Any]) -> None:
        loop, queue = self._ensure()
        loop.call_soon_threadsafe(queue.put_nowait, (layer, group, message))

    def _ensure(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue]:
        if self._pid != os.getpid() or self._loop is None:  # new process (fork): new loop
            with self._lock:
                if self._pid != os.getpid() or self._loop is None:
                    loop = asyncio.new_event_loop()
                    queue: asyncio.Queue = asyncio.Queue()
                    self._drainer = loop.create_task(self._drain(queue))  # referenced: not collected
                    threading.Thread(target=loop.run_forever, name="live-updates", daemon=True).start()
                    self._loop, self._queue, self._pid = loop, queue, os.getpid()
        return self._loop, self._queue

    @staticmethod
    async def _drain(queue: asyncio.Queue) -> None:
        while True:
            layer, group, message = await queue.get()
            try:
                await layer.group_send(group, message)
            except Exception:
                log.warning("live update to %s not sent", group, exc_info=True)


_sender = _OrderedSender()
