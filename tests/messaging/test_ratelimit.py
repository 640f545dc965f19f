import os
import uuid

import pytest

from comms_platform import ratelimit
from tests.support.services import unavailable


def test_memory_bucket_allows_burst_then_asks_to_wait():
    key = f"t-{uuid.uuid4()}"
    assert ratelimit.acquire(key, rate=2, burst=2, redis_url="") == 0.0
    assert ratelimit.acquire(key, rate=2, burst=2, redis_url="") == 0.0
    wait = ratelimit.acquire(key, rate=2, burst=2, redis_url="")
    assert 0.3 < wait <= 0.5


def test_zero_rate_means_unlimited():
    assert all(ratelimit.acquire("free", rate=0, redis_url="") == 0.0 for _ in range(100))


@pytest.mark.services
def test_redis_bucket_is_shared_and_atomic():
    redis_url = os.environ.get("REDIS_URL") or unavailable("needs Redis (set REDIS_URL=redis://…)")
    key = f"t-{uuid.uuid4()}"
    waits = [ratelimit.acquire(key, rate=5, burst=5, redis_url=redis_url) for _ in range(7)]
    assert waits[:5] == [0.0] * 5
    assert all(0 < w <= 0.4 for w in waits[5:])
    # Another key is another bucket.
    assert ratelimit.acquire(f"{key}-other", rate=5, redis_url=redis_url) == 0.0


@pytest.mark.django_db
def test_a_paced_send_writes_one_dossier_message_however_often_it_waits(settings, fake_twilio):
    """A low per-sender rate: the second send waits (comes back as a retry, its attempt given
    back) twice; the dossier holds one outbound message per send that went, none per wait."""
    from agents.messaging.sending import message_send
    from dossiers.models import Message
    from orchestrator.errors import TransientError
    from orchestrator.models import Task
    from orchestrator.services import task_claim, task_release

    settings.MESSAGING_RATE_PER_SECOND = 0.05  # one send every 20 s: the second one waits
    ratelimit.reset_memory()
    first, second = (
        Task.objects.create(
            type="sms.send",
            channel="sms",
            status="queued",
            payload={"to": f"+1415555010{n}", "body": f"hi {n}"},
        )
        for n in range(2)
    )
    message_send(task=task_claim(task_id=first.id, worker="w"), channel="sms")
    for _ in range(2):
        with pytest.raises(TransientError, match="rate limit"):
            message_send(task=task_claim(task_id=second.id, worker="w"), channel="sms")
        task_release(task_id=second.id, reason="rate limited", retry_in=0)
    assert Message.objects.filter(direction="outbound").count() == 1
    assert len(fake_twilio.posts()) == 1
    assert Task.objects.get(id=second.id).attempts == 0  # waiting is not an attempt
