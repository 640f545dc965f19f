"""The production provider: the real twilio SDK against a local fake Calls API."""

from __future__ import annotations

import pytest

from agents.voice import links
from agents.voice.providers import OutboundCall
from agents.voice.providers.twilio import STATUS_EVENTS, TwilioVoiceProvider
from orchestrator.errors import PermanentError, TransientError
from orchestrator.models import Task
from tests.fakes.twilio_calls import FakeTwilioCalls

SID = "AC" + "ab" * 16
TOKEN = "cd" * 16


@pytest.fixture
def fake_twilio(settings):
    settings.TWILIO_ACCOUNT_SID = SID
    settings.TWILIO_AUTH_TOKEN = TOKEN
    with FakeTwilioCalls(SID, TOKEN) as fake:
        settings.TWILIO_API_BASE_URL = fake.base_url
        yield fake


def outbound(**overrides) -> OutboundCall:
    values = dict(task_id="t-1", to="+14155550123", from_="+15005550006",
                  twiml_url="https://comms.example.com/webhooks/twilio/voice/t-1/twiml/",
                  status_callback="https://comms.example.com/webhooks/twilio/voice/t-1/status/#rc=3&rp=all",
                  recording_callback="https://comms.example.com/webhooks/twilio/voice/t-1/recording/")  # fmt: skip
    return OutboundCall(**{**values, **overrides})


def test_calls_api_request_carries_to_from_url_and_status_callbacks(fake_twilio):
    sid = TwilioVoiceProvider().start_call(outbound())

    assert sid.startswith("CA") and len(sid) == 34
    [request] = fake_twilio.requests
    assert request.auth == (SID, TOKEN)
    assert request.content_type.startswith("application/x-www-form-urlencoded")
    assert request.one("To") == "+14155550123"
    assert request.one("From") == "+15005550006"
    assert request.one("Url") == "https://comms.example.com/webhooks/twilio/voice/t-1/twiml/"
    assert request.one("Method") == "POST"
    assert (
        request.one("StatusCallback")
        == "https://comms.example.com/webhooks/twilio/voice/t-1/status/#rc=3&rp=all"
    )
    assert request.form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert request.one("StatusCallbackMethod") == "POST"
    assert "Record" not in request.form and "MachineDetection" not in request.form


def test_recording_and_machine_detection_when_asked(fake_twilio):
    TwilioVoiceProvider().start_call(
        outbound(record=True, machine_detection="DetectMessageEnd", time_limit=300)
    )

    [request] = fake_twilio.requests
    assert request.one("Record") == "true"
    assert (
        request.one("RecordingStatusCallback")
        == "https://comms.example.com/webhooks/twilio/voice/t-1/recording/"
    )
    assert request.one("MachineDetection") == "DetectMessageEnd"
    assert request.one("TimeLimit") == "330"
    assert request.form["StatusCallbackEvent"] == STATUS_EVENTS


def test_a_refused_number_is_a_permanent_error(fake_twilio):
    fake_twilio.fail_with = (400, 21211, "The 'To' number +1 is not a valid phone number.")
    with pytest.raises(PermanentError) as caught:
        TwilioVoiceProvider().start_call(outbound())
    assert caught.value.code == "twilio_21211"


def test_a_twilio_outage_is_transient(fake_twilio):
    fake_twilio.fail_with = (503, 20503, "Service unavailable")
    with pytest.raises(TransientError):
        TwilioVoiceProvider().start_call(outbound())


def test_post_api_calls_in_production_places_the_call_through_the_sdk(fake_twilio, api, settings,
                                                                        django_capture_on_commit_callbacks):  # fmt: skip
    settings.TEST_MODE = False
    settings.PUBLIC_BASE_URL = "https://comms.example.com"
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/calls/", {"to": "+1 415 555 0123", "goal": "confirm the delivery",
                                            "record": True, "machine_detection": True},
                            content_type="application/json")  # fmt: skip
    assert response.status_code == 201, response.content
    task = Task.objects.get(id=response.json()["id"])
    [request] = fake_twilio.requests
    assert task.status == "in_progress"
    assert task.provider_id.startswith("CA") and len(task.provider_id) == 34
    assert request.one("To") == "+14155550123"
    assert request.one("From") == settings.TWILIO_VOICE_CALLER_ID
    assert request.one("Url") == links.twiml_url(task.id)
    assert request.one("StatusCallback") == links.status_callback_url(task.id)
    assert request.one("MachineDetection") == "Enable"
    assert request.one("Record") == "true"
    assert task.calls.get().provider_sid == task.provider_id


@pytest.mark.django_db
def test_a_redelivered_task_never_dials_twice(fake_twilio, settings):
    from agents.voice.handlers import call_outbound
    from tests.voice.conftest import make_call_task

    settings.TEST_MODE = False
    task, call = make_call_task(status="dispatched")
    call.provider_sid = "CA" + "4" * 32
    call.save(update_fields=["provider_sid"])
    call_outbound(task)
    task.refresh_from_db()
    assert fake_twilio.requests == []
    assert (task.status, task.provider_id) == ("in_progress", call.provider_sid)


@pytest.mark.django_db
def test_an_opted_out_contact_is_not_called(fake_twilio, settings):
    from agents.voice.handlers import call_outbound
    from dossiers.models import Contact
    from dossiers.services import consent_set
    from tests.voice.conftest import make_call_task

    settings.TEST_MODE = False
    task, _ = make_call_task(status="dispatched")
    contact = Contact.objects.create(phone="+14155550123")
    Task.objects.filter(id=task.id).update(contact=contact)
    consent_set(contact_id=contact.id, channel="voice", status="opted_out", source="keyword")
    task.refresh_from_db()
    with pytest.raises(PermanentError) as refused:
        call_outbound(task)
    assert refused.value.code == "opted_out"
    assert fake_twilio.requests == []
    assert fake_twilio.base_url == settings.TWILIO_API_BASE_URL


@pytest.mark.django_db
def test_a_recording_is_downloaded_with_basic_auth(fake_twilio, client, settings, tmp_path,
                                                   django_capture_on_commit_callbacks):  # fmt: skip
    from django.core.files.storage import default_storage

    from dossiers.models import Artifact
    from tests.voice.conftest import make_call_task, twilio_sign

    settings.MEDIA_ROOT = str(tmp_path)
    recording_sid = "RE" + "ef" * 16
    fake_twilio.recordings[recording_sid] = b"RIFF....WAVEfmt fake audio"
    task, call = make_call_task()
    params = {"CallSid": "CA" + "1" * 32, "RecordingSid": recording_sid, "RecordingStatus": "completed",
              "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Recordings/{recording_sid}"}  # fmt: skip
    url = links.recording_callback_url(task.id).split("#")[0]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url.removeprefix(settings.PUBLIC_BASE_URL), params,
                               HTTP_X_TWILIO_SIGNATURE=twilio_sign(url, params))  # fmt: skip
    assert response.status_code == 200
    artifact = Artifact.objects.get(task=task)
    assert artifact.storage_key and artifact.size == 26 and artifact.content_type == "audio/x-wav"
    call.refresh_from_db()
    assert call.recording_id == artifact.id
    with default_storage.open(artifact.storage_key) as stored:
        assert stored.read() == b"RIFF....WAVEfmt fake audio"


def test_fetch_call_reads_twilios_record_with_the_sdk(fake_twilio):
    from agents.voice.providers.twilio import TwilioVoiceProvider

    provider = TwilioVoiceProvider()
    sid = provider.start_call(outbound())
    fake_twilio.calls[sid].update(status="completed", duration="42")
    assert provider.fetch_call(sid) == ("completed", 42)
    assert provider.fetch_call("CA" + "0" * 32) == ("not_found", None)


def test_take_call_dequeues_the_member_through_the_queue_members_api(fake_twilio):
    """The console's Take call: POST /Queues/<QU>/Members/<CA>.json with the bridge URL."""
    queue_sid, call_sid = "QU" + "1" * 32, "CA" + "2" * 32
    url = "https://comms.example.com/webhooks/twilio/voice/t-1/handoff-bridge/?handoff=h-1&operator=olivia"
    TwilioVoiceProvider().dequeue(queue_sid=queue_sid, call_sid=call_sid, url=url)
    [request] = fake_twilio.requests
    assert (request.queue_sid, request.call_sid) == (queue_sid, call_sid)
    assert request.form == {"Url": [url], "Method": ["POST"]}
    assert request.auth == (SID, TOKEN)
