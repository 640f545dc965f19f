"""Live updates of the console. The groups and publishers live in ``orchestrator.live`` so
that agents can publish to them too; this module re-exports them for the console.

Broadcasts tell their progress with the ``broadcasts.signals.progress_changed`` signal (sent
after commit, in the worker or web process that changed the counts); the console forwards it
to the broadcast's group, ``broadcast.<id>``, connected in ``DashboardConfig.ready``."""

from __future__ import annotations

from typing import Any

from orchestrator.live import (
    CALLS_GROUP,
    HEALTH_GROUP,
    INBOX_GROUP,
    call_group,
    publish_inbox_update,
    send_group,
)


def broadcast_group(broadcast_id: Any) -> str:
    return f"broadcast.{broadcast_id}"


def forward_broadcast_progress(sender: Any, *, broadcast_id: str, **kwargs: Any) -> None:
    """``progress_changed`` receiver: one small message per batch; the watching page reads the
    counts itself (at most a few times a second), so a worker pays no count query per batch."""
    send_group(
        broadcast_group(broadcast_id), {"type": "broadcast.progress", "broadcast_id": str(broadcast_id)}
    )


__all__ = [
    "CALLS_GROUP",
    "HEALTH_GROUP",
    "INBOX_GROUP",
    "broadcast_group",
    "call_group",
    "forward_broadcast_progress",
    "publish_inbox_update",
    "send_group",
]
