"""The task state machine: every pair of states, through the service that writes events."""

from __future__ import annotations

import itertools

import pytest

from orchestrator.models import Task, TaskEvent
from orchestrator.services import task_transition
from orchestrator.states import FINAL, RANK, TRANSITIONS, IllegalTransition, Kind, TaskStatus, classify

S = TaskStatus
ALL = list(S)

LEGAL = {
    (S.PENDING, S.ROUTED), (S.ROUTED, S.QUEUED), (S.QUEUED, S.DISPATCHED), (S.DISPATCHED, S.IN_PROGRESS),
    (S.DISPATCHED, S.SUCCEEDED), (S.IN_PROGRESS, S.SUCCEEDED),
    *{(s, end) for s in (S.PENDING, S.ROUTED, S.QUEUED, S.DISPATCHED, S.IN_PROGRESS)
      for end in (S.FAILED, S.CANCELLED, S.EXPIRED)},
}  # fmt: skip


def test_transition_table_is_exactly_the_designed_one():
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == LEGAL


@pytest.mark.parametrize(("current", "target"), list(itertools.product(ALL, ALL)))
def test_classification_of_every_pair(current, target):
    kind = classify(current, target)
    if (current, target) in LEGAL:
        assert kind is Kind.LEGAL
    elif current == target or RANK[target] < RANK[current]:
        assert kind is Kind.STALE
    else:
        assert kind is Kind.ILLEGAL


def make_task(status: str) -> Task:
    return Task.objects.create(type="diagnostic.echo", channel="system", status=status)


@pytest.mark.django_db
@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_legal_transition_changes_state_and_writes_one_event(current, target):
    task = make_task(current)
    outcome = task_transition(task_id=task.id, to=target, actor="test")
    task.refresh_from_db()
    assert outcome.applied
    assert task.status == target
    assert (task.finished_at is not None) == (target in FINAL)
    event = TaskEvent.objects.get(task=task)
    assert (event.from_status, event.to_status, event.applied, event.actor) == (current, target, True, "test")


ILLEGAL = [
    (a, b) for a, b in itertools.product(ALL, ALL) if (a, b) not in LEGAL and a != b and RANK[b] >= RANK[a]
]


@pytest.mark.django_db
@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_transition_raises_and_writes_nothing(current, target):
    task = make_task(current)
    with pytest.raises(IllegalTransition):
        task_transition(task_id=task.id, to=target, actor="test")
    task.refresh_from_db()
    assert task.status == current
    assert not TaskEvent.objects.filter(task=task).exists()


@pytest.mark.django_db
def test_unknown_target_state_is_illegal():
    task = make_task(S.QUEUED)
    with pytest.raises(IllegalTransition):
        task_transition(task_id=task.id, to="teleported", actor="test")


STALE = [
    (a, b) for a, b in itertools.product(ALL, ALL) if (a, b) not in LEGAL and (a == b or RANK[b] < RANK[a])
]


@pytest.mark.django_db
@pytest.mark.parametrize(("current", "target"), STALE)
def test_backwards_transition_is_recorded_but_does_not_change_state(current, target):
    task = make_task(current)
    outcome = task_transition(task_id=task.id, to=target, actor="late-callback")
    task.refresh_from_db()
    assert not outcome.applied
    assert task.status == current
    event = TaskEvent.objects.get(task=task)
    assert (event.from_status, event.to_status, event.applied) == (current, target, False)


@pytest.mark.django_db
def test_late_in_progress_after_success_does_not_regress():
    task = make_task(S.DISPATCHED)
    task_transition(task_id=task.id, to=S.SUCCEEDED, actor="webhook", provider_id="SM1")
    task_transition(task_id=task.id, to=S.IN_PROGRESS, actor="webhook")
    task.refresh_from_db()
    assert task.status == S.SUCCEEDED
    assert task.provider_id == "SM1"
    assert list(TaskEvent.objects.filter(task=task).values_list("to_status", "applied")) == [
        (S.SUCCEEDED, True),
        (S.IN_PROGRESS, False),
    ]


@pytest.mark.django_db
def test_many_transitions_apply_in_order_as_one_at_a_time_would():
    """task_transition_many: the same rules, in order, per task; an illegal change or a missing
    task comes back as the exception task_transition would raise, with nothing written."""
    import uuid

    from orchestrator.services import Transition, task_transition_many

    a, b = make_task(S.DISPATCHED), make_task(S.PENDING)
    missing = uuid.uuid4()
    results = task_transition_many([
        Transition(task_id=a.id, to=S.IN_PROGRESS, actor="t", provider_id="SM1"),
        Transition(task_id=b.id, to=S.SUCCEEDED, actor="t"),  # pending → succeeded: illegal
        Transition(task_id=a.id, to=S.SUCCEEDED, actor="t", result={"k": 1}),
        Transition(task_id=missing, to=S.FAILED, actor="t"),
        Transition(task_id=a.id, to=S.IN_PROGRESS, actor="t"),  # late: recorded, not applied
    ])  # fmt: skip
    assert [r.applied if not isinstance(r, Exception) else type(r) for r in results] == [
        True, IllegalTransition, True, Task.DoesNotExist, False,
    ]  # fmt: skip
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, a.provider_id, a.result, a.finished_at is not None) == (
        S.SUCCEEDED,
        "SM1",
        {"k": 1},
        True,
    )
    assert b.status == S.PENDING and not TaskEvent.objects.filter(task=b).exists()
    assert list(TaskEvent.objects.filter(task=a).order_by("id").values_list("from_status", "to_status", "applied")) == [
        (S.DISPATCHED, S.IN_PROGRESS, True), (S.IN_PROGRESS, S.SUCCEEDED, True), (S.SUCCEEDED, S.IN_PROGRESS, False),
    ]  # fmt: skip


@pytest.mark.django_db
def test_a_task_that_succeeds_after_retries_keeps_no_stale_error():
    from orchestrator.services import task_release

    task = Task.objects.create(type="diagnostic.echo", channel="system", status=TaskStatus.DISPATCHED)
    task_release(task_id=task.id, reason="Twilio answered 500", retry_in=0)
    assert Task.objects.get(id=task.id).error_message == "Twilio answered 500"
    task_transition(task_id=task.id, to=TaskStatus.SUCCEEDED, actor="agent:diagnostic")
    task.refresh_from_db()
    assert (task.status, task.error_code, task.error_message) == (TaskStatus.SUCCEEDED, "", "")


@pytest.mark.django_db
def test_only_a_provider_failure_is_superseded_by_a_later_success():
    for final in (TaskStatus.CANCELLED, TaskStatus.EXPIRED):
        task = Task.objects.create(type="diagnostic.echo", channel="system", status=final)
        with pytest.raises(IllegalTransition):
            task_transition(task_id=task.id, to=TaskStatus.SUCCEEDED, actor="webhook:twilio",
                            supersedes_failure=True)  # fmt: skip
    failed = Task.objects.create(type="diagnostic.echo", channel="system", status=TaskStatus.FAILED,
                                 error_code="30003", error_message="unreachable")  # fmt: skip
    with pytest.raises(IllegalTransition):  # without the flag, a final state is never left
        task_transition(task_id=failed.id, to=TaskStatus.SUCCEEDED, actor="webhook:twilio")
    result = task_transition(task_id=failed.id, to=TaskStatus.SUCCEEDED, actor="webhook:twilio",
                             supersedes_failure=True)  # fmt: skip
    assert result.applied and result.task.status == TaskStatus.SUCCEEDED and result.task.error_code == ""
