"""Push task changes to the console's websocket groups, after the change is committed."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def task_group(task_id: Any) -> str:
    return f"task.{task_id}"


def publish_task_update(task_id: Any, data: dict[str, Any]) -> None:
    """Send ``data`` to the task's group once the surrounding transaction commits.

    Live updates are a convenience: a failure to publish is logged, never raised.
    """

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(task_group(task_id), {"type": "task.update", "data": data})
        except Exception:
            log.warning("live update for task %s not sent", task_id, exc_info=True)

    transaction.on_commit(send)
