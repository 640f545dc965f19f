"""Reads for the inbox and the supervisor view; each a fixed, small number of queries."""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from django.db.models import Count, Min, Q
from django.utils import timezone

from conversations.models import ACTIVE, Conversation, Operator
from conversations.models import Status as C


def inbox_counts(*, user: Any) -> dict[str, int]:
    """Active conversations per folder and their unread messages (one query)."""
    active = Q(status__in=ACTIVE)
    return Conversation.objects.aggregate(
        mine=Count("pk", filter=active & Q(assignee=user)),
        unassigned=Count("pk", filter=active & Q(assignee__isnull=True)),
        all=Count("pk", filter=active),
        unread_mine=Count("pk", filter=active & Q(assignee=user, unread__gt=0)),
        sla_breached=Count("pk", filter=active & Q(sla_breached=True)),
    )


def supervisor_figures(*, now: datetime | None = None) -> dict[str, Any]:
    """Queue depth and oldest waiting per channel, SLA breaches, and per operator their
    active conversations and median first response today (three queries)."""
    now = now or timezone.now()
    waiting = Conversation.objects.filter(status__in=(C.OPEN, C.PENDING), waiting_since__isnull=False)
    per_channel = {
        row["channel"]: {"depth": row["depth"], "oldest_seconds": int((now - row["oldest"]).total_seconds())}
        for row in waiting.values("channel").annotate(depth=Count("pk"), oldest=Min("waiting_since"))
    }
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    firsts: dict[Any, list[int]] = {}
    for user_id, seconds in Conversation.objects.filter(
        first_response_at__gte=day, first_response_seconds__isnull=False, assignee__isnull=False
    ).values_list("assignee_id", "first_response_seconds"):
        firsts.setdefault(user_id, []).append(seconds)
    operators = []
    for op in (
        Operator.objects.select_related("user")
        .annotate(
            active=Count(
                "user__assigned_conversations", filter=Q(user__assigned_conversations__status__in=ACTIVE)
            )
        )
        .order_by("user__username")
    ):
        times = firsts.get(op.user_id, [])
        operators.append({"username": op.user.get_username(), "available": op.available, "capacity": op.capacity,
                          "active": op.active,
                          "median_first_response_seconds": int(statistics.median(times)) if times else None})  # fmt: skip
    return {
        "channels": per_channel,
        "sla_breached": Conversation.objects.filter(status__in=ACTIVE, sla_breached=True).count(),
        "operators": operators,
    }
