"""Task services: every write to a task goes through here, one module per concern.

- ``intake``: ``task_create`` writes the row (the outbox) and asks for dispatch on commit;
  ``task_retry`` re-runs a finished, unsuccessful task as a new one.
- ``dispatch``: ``task_dispatch`` sends the Celery message, then records pending → routed →
  queued. If the broker is down the task simply stays ``pending``; ``sweep_tasks`` re-sends it.
- ``claim``: ``task_claim`` is the worker's first step: it takes the task (→ dispatched) and
  counts the attempt, dead-lettering a task that keeps coming back; ``task_release``.
- ``transitions``: ``task_transition`` applies one transition and writes its ``TaskEvent`` in
  the same transaction; stale (backwards) transitions are recorded but change nothing.
- ``sweep``: ``sweep_tasks`` re-sends stuck tasks, retakes abandoned ones, expires overdue ones,
  flushes due digests.
- ``digests``: ``digest_join`` collects a ``notify`` item into its contact's open digest;
  ``digest_flush`` / ``digests_flush_due`` send a digest as one ``notify`` task.

Callers import from ``orchestrator.services``; a test that replaces a name patches the module
that uses it (e.g. ``orchestrator.services.intake``).
"""

from orchestrator.services.claim import RETRY_CLOCK_SLACK_SECONDS, task_claim, task_release
from orchestrator.services.digests import digest_flush, digest_join, digests_flush_due
from orchestrator.services.dispatch import (
    PUBLISH_BATCH,
    dispatch_tasks,
    request_dispatch,
    send_tasks,
    task_dispatch,
)
from orchestrator.services.intake import (
    RETRYABLE,
    IdempotencyConflict,
    NotRetryable,
    UnknownTaskType,
    request_digest,
    task_create,
    task_retry,
)
from orchestrator.services.sweep import SweepReport, sweep_tasks
from orchestrator.services.transitions import (
    FINAL_STATUS_RULE,
    Transition,
    TransitionResult,
    task_attempt_give_back,
    task_cancel,
    task_contact_link,
    task_fail,
    task_provider_id_set_if_unset,
    task_transition,
    task_transition_many,
)

__all__ = [
    "FINAL_STATUS_RULE",
    "PUBLISH_BATCH",
    "RETRYABLE",
    "RETRY_CLOCK_SLACK_SECONDS",
    "IdempotencyConflict",
    "NotRetryable",
    "SweepReport",
    "Transition",
    "TransitionResult",
    "UnknownTaskType",
    "digest_flush",
    "digest_join",
    "digests_flush_due",
    "dispatch_tasks",
    "request_digest",
    "request_dispatch",
    "send_tasks",
    "sweep_tasks",
    "task_attempt_give_back",
    "task_cancel",
    "task_claim",
    "task_contact_link",
    "task_create",
    "task_dispatch",
    "task_fail",
    "task_provider_id_set_if_unset",
    "task_release",
    "task_retry",
    "task_transition",
    "task_transition_many",
]
