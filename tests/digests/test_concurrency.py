"""Races on PostgreSQL, each side on its own connection: an item joining while its digest is
being flushed ends in the next digest (never in both, never dropped); items opening a digest at
the same moment agree on one."""

from __future__ import annotations

import threading

from django.db import connection, connections

from orchestrator import services
from orchestrator.models import Digest, DigestItem, Task
from orchestrator.states import TaskStatus
from orchestrator.tasks import execute_task
from tests.digests.conftest import PHONE, item, sent_to
from tests.support.services import transactional_db, unavailable

S = TaskStatus


def in_thread(target, *args) -> threading.Thread:
    def run() -> None:
        try:
            target(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@transactional_db
def test_an_item_joining_during_the_flush_goes_into_the_next_digest(clock, sms_route, ada, monkeypatch):
    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL (row locks across connections)")
    from orchestrator.services import digests, intake

    item(ada, "first")
    clock.at(300)
    # An item that arrived inside the window (created_at = T0 + 300 s) but waits in the queue
    # behind a busy worker: its row exists, its handler has not run yet.
    dispatch = intake.request_dispatch
    monkeypatch.setattr(intake, "request_dispatch", lambda task: None)
    late = item(ada, "arrived in time, joined late")
    monkeypatch.setattr(intake, "request_dispatch", dispatch)
    assert late.status == S.PENDING
    clock.at(600)

    flushing, release = threading.Event(), threading.Event()
    render = digests.message_payload

    def slow_render(digest, tasks):  # the flush holds the digest's row lock while it renders
        flushing.set()
        assert release.wait(20)
        return render(digest, tasks)

    monkeypatch.setattr(digests, "message_payload", slow_render)
    outcomes: dict[str, str] = {}
    flush = in_thread(
        lambda: outcomes.setdefault("flush", services.digest_flush(digest_id=Digest.objects.get().id))
    )
    assert flushing.wait(20)
    join = in_thread(lambda: outcomes.setdefault("join", execute_task.apply(args=[str(late.id)]).result))
    join.join(0.5)
    assert join.is_alive()  # waiting for the digest's row lock, not joining a digest being sent
    release.set()
    flush.join(20)
    join.join(20)
    assert outcomes == {"flush": "sent", "join": "done"}

    first, second = Digest.objects.order_by("id")
    assert (first.status, first.item_count) == ("sent", 1)
    assert sent_to(PHONE) == ["first"]  # the late item is not in the message that went
    assert (second.status, second.item_count) == ("open", 1)
    assert DigestItem.objects.get(task=late).digest_id == second.id
    late.refresh_from_db()
    assert late.status == S.IN_PROGRESS and late.result["digest"]["id"] == second.id
    # The next digest's window starts at the late item's arrival: it is not held past that item's window.
    assert second.opens_at == late.created_at < first.closes_at
    clock.at(899.999)
    assert services.digests_flush_due() == 0
    clock.at(900)
    assert services.digests_flush_due() == 1
    assert sent_to(PHONE) == ["first", "arrived in time, joined late"]
    assert DigestItem.objects.count() == 2 and Task.objects.filter(digest_item__isnull=False).count() == 2


@transactional_db
def test_items_opening_a_digest_at_the_same_moment_agree_on_one(clock, sms_route, ada, monkeypatch):
    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL (the partial unique constraint across connections)")
    from orchestrator.services import intake

    dispatch = intake.request_dispatch
    monkeypatch.setattr(intake, "request_dispatch", lambda task: None)  # queued: the threads run them
    tasks = []
    for n in range(6):
        clock.at(n)
        tasks.append(item(ada, f"item {n}"))
    monkeypatch.setattr(intake, "request_dispatch", dispatch)
    start = threading.Barrier(len(tasks))
    results: list[str] = []

    def run(task_id: str) -> None:
        start.wait(10)
        results.append(execute_task.apply(args=[task_id]).result)

    threads = [in_thread(run, str(t.id)) for t in tasks]
    for thread in threads:
        thread.join(30)
    assert results == ["done"] * len(tasks)
    digest = Digest.objects.get()
    assert (digest.status, digest.item_count, digest.items.count()) == ("open", 6, 6)
    clock.at(700)
    assert services.digests_flush_due() == 1
    assert sent_to(PHONE) == ["6 updates:\n" + "\n".join(f"- item {n}" for n in range(6))]
