"""Live updates of the console. The groups and publishers live in ``orchestrator.live`` so
that agents can publish to them too; this module re-exports them for the console."""

from __future__ import annotations

from orchestrator.live import (
    CALLS_GROUP,
    HEALTH_GROUP,
    INBOX_GROUP,
    call_group,
    publish_inbox_update,
    send_group,
)

__all__ = ["CALLS_GROUP", "HEALTH_GROUP", "INBOX_GROUP", "call_group", "publish_inbox_update", "send_group"]
