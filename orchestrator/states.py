"""The task state machine (DESIGN.md, "Tasks and their life").

pending → routed → queued → dispatched → in_progress → succeeded | failed | cancelled | expired

A transition is one of three kinds:
- *legal*: listed in TRANSITIONS; it changes the state.
- *stale*: the target ranks at or below the current state (a late ``sent`` after
  ``delivered``, a duplicate); it is recorded as an event but changes nothing.
- *illegal*: anything else (skipping ahead, leaving a final state for another one);
  it raises IllegalTransition.
"""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class TaskStatus(models.TextChoices):
    PENDING = "pending"
    ROUTED = "routed"
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


S = TaskStatus
FINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.EXPIRED})
# Before a worker took it: the sweeper re-sends these, and expires them past their deadline.
PRE_DISPATCH = (S.PENDING, S.ROUTED, S.QUEUED)
_ENDINGS = {S.FAILED, S.CANCELLED, S.EXPIRED}

TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.ROUTED, *_ENDINGS}),
    S.ROUTED: frozenset({S.QUEUED, *_ENDINGS}),
    S.QUEUED: frozenset({S.DISPATCHED, *_ENDINGS}),
    S.DISPATCHED: frozenset({S.IN_PROGRESS, S.SUCCEEDED, *_ENDINGS}),
    S.IN_PROGRESS: frozenset({S.SUCCEEDED, *_ENDINGS}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
}

RANK: dict[str, int] = {
    S.PENDING: 0,
    S.ROUTED: 1,
    S.QUEUED: 2,
    S.DISPATCHED: 3,
    S.IN_PROGRESS: 4,
    **{s: 5 for s in FINAL},
}

# The forward path a task walks to reach a state; used when a worker claims a task
# whose earlier steps were not recorded yet (each step still gets its own event).
PATH = [S.PENDING, S.ROUTED, S.QUEUED, S.DISPATCHED, S.IN_PROGRESS]


class Kind(StrEnum):
    LEGAL = "legal"
    STALE = "stale"
    ILLEGAL = "illegal"


class IllegalTransition(Exception):
    def __init__(self, current: str, target: str) -> None:
        self.current = current
        self.target = target
        super().__init__(f"illegal transition {current} → {target}")


def classify(current: str, target: str) -> Kind:
    if target not in RANK:
        return Kind.ILLEGAL
    if target in TRANSITIONS[current]:
        return Kind.LEGAL
    if current in FINAL:
        # A final state is never left: the same final state again is a duplicate
        # (stale); another final state, or anything else, is stale only when it
        # ranks below (a late "in_progress" after "succeeded").
        return Kind.STALE if target == current or RANK[target] < RANK[current] else Kind.ILLEGAL
    if RANK[target] <= RANK[current]:
        return Kind.STALE
    return Kind.ILLEGAL


def is_final(status: str) -> bool:
    return status in FINAL


def forward_path(current: str, target: str) -> list[str]:
    """The states to walk through from ``current`` to ``target`` (excluding current).

    Used by the claim and dispatch steps, which may find earlier steps not yet
    recorded. Raises IllegalTransition when no forward path exists.
    """
    if current == target:
        return []
    if current in PATH and target in PATH and PATH.index(target) > PATH.index(current):
        return PATH[PATH.index(current) + 1 : PATH.index(target) + 1]
    if classify(current, target) is Kind.LEGAL:
        return [target]
    raise IllegalTransition(current, target)
