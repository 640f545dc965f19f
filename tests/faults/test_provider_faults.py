"""A provider answering 429 with Retry-After, 500, and hanging past the timeout, with a real
worker and the sweeper running all along (every 0.3 s, far more often than beat would).

- Retry-After is obeyed (the sweeper does not retake a task waiting out its backoff), each
  retry backs off, and a send whose answer never came is not sent again: the retry asks
  Twilio first and finds the message the hung request created.
- A provider that keeps failing fails the task with the reason once the retries are spent.
- A task whose deadline passes while it waits for a retry expires and is never sent late.
Nothing is left in queued or dispatched.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.messaging.models import SendAttempt
from orchestrator.models import Task
from orchestrator.services import task_create
from orchestrator.states import TaskStatus
from tests.fakes.twilio import FakeTwilio, Scripted
from tests.faults.support import sweep
from tests.support.services import celery_worker, platform_env, redis_server, transactional_db, wait_until

S = TaskStatus
ACCOUNT = "AC" + "8" * 32
TOKEN = "8badf00d8badf00d8badf00d8badf00d"
pytestmark = [transactional_db, pytest.mark.faults, pytest.mark.services, pytest.mark.worker]


@pytest.fixture
def platform(tmp_path, settings):
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN).start()
    with redis_server() as (redis_url, _, _):
        env = platform_env(REDIS_URL=redis_url, TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN=TOKEN,
                           TWILIO_API_BASE_URL=fake.base_url, TWILIO_SMS_FROM="+15005550006",
                           PUBLIC_BASE_URL="http://127.0.0.1:9", MESSAGING_RATE_PER_SECOND="0",
                           MESSAGING_MAX_RETRIES="3", TASK_MAX_ATTEMPTS="6", TWILIO_TIMEOUT_SECONDS="1",
                           TASK_RETRY_BACKOFF_SECONDS="0.2")  # fmt: skip
        # Intake here sends to the same broker as the API would (the test process is eager otherwise).
        settings.REDIS_URL = redis_url
        stop = threading.Event()

        def sweeper() -> None:
            while not stop.wait(0.3):
                sweep(env)

        thread = threading.Thread(target=sweeper, daemon=True)
        with celery_worker(env, queues="orchestrator,messaging", concurrency=2, log_path=tmp_path / "w.log"):
            thread.start()
            try:
                yield fake, env
            finally:
                stop.set()
                thread.join(30)
    fake.stop()


def send(**extra) -> str:
    from comms_platform.celery import app

    app.conf.task_always_eager = False
    try:
        task, _ = task_create(type="sms.send", payload={"to": "+14155550188", "body": "faults"}, **extra)
        from orchestrator.services import task_dispatch

        task_dispatch(task_id=task.id, actor="test")
    finally:
        app.conf.task_always_eager = True
    return str(task.id)


def status(task_id: str) -> str:
    return Task.objects.values_list("status", flat=True).get(id=task_id)


def test_429_500_and_a_hang_are_retried_with_backoff_and_sent_once(platform):
    fake, _ = platform
    fake.script = [Scripted(429, 20429, "Too Many Requests", retry_after="3"), Scripted(500, 20500, "Internal"),
                   Scripted(201, hang=2.0)]  # fmt: skip
    task_id = send()
    wait_until(lambda: status(task_id) == S.IN_PROGRESS, timeout=40, message="the send to get through")
    posts = fake.posts()
    # 429, 500, the hung one (Twilio accepted it); the retry after the hang asked, did not resend.
    assert len(posts) == 3, [p.form for p in posts]
    assert posts[1].at - posts[0].at >= 3.0  # Retry-After obeyed although the sweeper ran
    assert posts[2].at - posts[1].at >= 0.2  # backed off
    assert len(fake.messages) == 1
    task = Task.objects.get(id=task_id)
    assert task.provider_id == fake.messages[0]["sid"]
    outcomes = list(
        SendAttempt.objects.filter(task_id=task_id).order_by("number").values_list("outcome", flat=True)
    )
    assert outcomes == ["retry", "retry", "accepted"]
    assert any(r.method == "GET" and "Messages.json" in r.path for r in fake.requests)


def test_a_provider_that_keeps_failing_fails_the_task_with_the_reason(platform):
    fake, _ = platform
    fake.script = [Scripted(500, 20500, "Internal Server Error")] * 10
    task_id = send()
    wait_until(lambda: status(task_id) == S.FAILED, timeout=40, message="the task to fail")
    task = Task.objects.get(id=task_id)
    assert len(fake.posts()) == 4  # the first try and MESSAGING_MAX_RETRIES=3 retries
    assert task.error_code == "twilio_20500" and "HTTP 500" in task.error_message


def test_a_deadline_passing_during_backoff_expires_the_task_unsent(platform):
    fake, _ = platform
    fake.script = [Scripted(429, 20429, "Too Many Requests", retry_after="4")]
    task_id = send(expires_at=timezone.now() + timedelta(minutes=5))
    wait_until(lambda: len(fake.posts()) == 1, timeout=30, message="the first send")
    # The deadline passes while the task waits out the 429's Retry-After.
    Task.objects.filter(id=task_id).update(expires_at=timezone.now() + timedelta(seconds=1))
    wait_until(lambda: status(task_id) == S.EXPIRED, timeout=30, message="the task to expire")
    assert len(fake.posts()) == 1
    assert not Task.objects.filter(status__in=[S.QUEUED, S.DISPATCHED, S.PENDING, S.ROUTED]).exists()
