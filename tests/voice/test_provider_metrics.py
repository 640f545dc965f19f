"""Every voice provider call (start call, hang up, status check, recording download) is observed
on the metrics the CommsProviderErrorRate alert reads: the real twilio SDK, in production mode,
against the local fake Calls API (tests/fakes/twilio_calls.py)."""

from __future__ import annotations

import pytest

from agents.voice import services
from agents.voice.handlers import call_hang_up, call_outbound, call_status_check
from dossiers.models import Call
from orchestrator.errors import TransientError
from tests.ops.test_metrics import scrape, value
from tests.voice.conftest import make_call_task
from tests.voice.test_twilio_provider import fake_twilio  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db
ERRORS, COUNT = "comms_provider_errors_total", "comms_provider_request_seconds_count"


@pytest.fixture(autouse=True)
def production(settings):
    settings.TEST_MODE = False


def moved(before, after, name, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_refused_call_moves_the_metrics_the_error_rate_alert_reads(client, fake_twilio):  # noqa: F811
    """CommsProviderErrorRate = rate(comms_provider_errors_total) / rate(comms_provider_request_seconds_count)."""
    labels = {"provider": "twilio", "operation": "calls.create"}
    fake_twilio.fail_with = (503, 20503, "Service unavailable")
    task, _ = make_call_task(status="dispatched")
    before = scrape(client)
    with pytest.raises(TransientError):
        call_outbound(task)
    after = scrape(client)
    assert len(fake_twilio.requests) == 1
    assert moved(before, after, ERRORS, code="twilio_20503", **labels) == 1
    assert moved(before, after, COUNT, **labels) == 1

    fake_twilio.fail_with = None  # Twilio is back: the retry places the call, timed, no error
    call_outbound(task)
    again = scrape(client)
    task.refresh_from_db()
    assert task.status == "in_progress" and task.provider_id.startswith("CA")
    assert moved(after, again, COUNT, **labels) == 1
    assert moved(after, again, ERRORS, code="twilio_20503", **labels) == 0


def test_a_local_refusal_calls_no_provider_and_counts_nothing(client, fake_twilio, settings):  # noqa: F811
    settings.TWILIO_VOICE_CALLER_ID = ""
    task, _ = make_call_task(status="dispatched")
    before = scrape(client)
    with pytest.raises(Exception, match="TWILIO_VOICE_CALLER_ID"):
        call_outbound(task)
    assert fake_twilio.requests == []
    assert moved(before, scrape(client), COUNT, provider="twilio", operation="calls.create") == 0


def test_hang_up_and_status_check_are_observed(client, fake_twilio):  # noqa: F811
    task, _ = make_call_task(status="dispatched")
    call_outbound(task)
    task.refresh_from_db()
    before = scrape(client)
    assert call_hang_up(task, "operator:olivia") == "asked"
    fake_twilio.calls[task.provider_id].update(status="completed", duration="12")
    assert call_status_check(task.id) == "applied:completed"
    after = scrape(client)
    assert moved(before, after, COUNT, provider="twilio", operation="calls.update") == 1
    assert moved(before, after, COUNT, provider="twilio", operation="calls.fetch") == 1
    task.refresh_from_db()
    assert task.status == "cancelled"  # the operator's hang-up, applied from Twilio's answer


def test_an_unreachable_twilio_on_hang_up_counts_an_error(client, fake_twilio, settings):  # noqa: F811
    task, call = make_call_task(status="in_progress")
    Call.objects.filter(id=call.id).update(provider_sid="CA" + "5" * 32)
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens there
    before = scrape(client)
    with pytest.raises(TransientError):
        call_hang_up(task, "operator:olivia")
    after = scrape(client)
    labels = {"provider": "twilio", "operation": "calls.update"}
    assert moved(before, after, ERRORS, code="provider_unreachable", **labels) == 1


def test_a_recording_download_is_observed(client, fake_twilio, settings, tmp_path):  # noqa: F811
    from django.utils import timezone

    from dossiers.models import Artifact

    settings.MEDIA_ROOT = str(tmp_path)
    account = settings.TWILIO_ACCOUNT_SID
    task, _ = make_call_task()
    stored, missing = "RE" + "ef" * 16, "RE" + "0" * 32
    fake_twilio.recordings[stored] = b"RIFF....WAVE"
    labels = {"provider": "twilio", "operation": "recordings.fetch"}
    before = scrape(client)
    for sid in (stored, missing):
        Artifact.objects.create(task=task, kind="recording", storage_key=f"artifacts/{sid}", content_type="audio/wav",
                                occurred_at=timezone.now(), source_url=f"https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{sid}")  # fmt: skip
    artifacts = dict(Artifact.objects.filter(task=task).values_list("storage_key", "id"))
    assert services.recording_fetch(artifact_id=artifacts[f"artifacts/{stored}"]) == "downloaded"
    with pytest.raises(Exception, match="404"):
        services.recording_fetch(artifact_id=artifacts[f"artifacts/{missing}"])
    after = scrape(client)
    assert moved(before, after, COUNT, **labels) == 2
    assert moved(before, after, ERRORS, code="http_404", **labels) == 1
