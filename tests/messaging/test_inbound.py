"""Inbound SMS/WhatsApp: dossier, keywords (STOP/START/HELP), the operators' queue, media."""

import time

import pytest

from agents.common.models import WebhookEvent
from conversations.models import Conversation
from dossiers.models import Artifact, Consent, ConsentChange, Contact, Message
from orchestrator.models import Task
from orchestrator.services import task_create
from orchestrator.states import TaskStatus
from tests.messaging.conftest import ACCOUNT, INBOUND_URL, TOKEN, signed_post

pytestmark = pytest.mark.django_db
S = TaskStatus
_counter = iter(range(10**6))


def inbound(body: str, *, sender: str = "+14155550100", **extra) -> dict:
    sid = f"SM{next(_counter):032x}"
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": ACCOUNT, "From": sender, "To": "+15005550006",
            "Body": body, "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01", **extra}  # fmt: skip


def receive(client, capture, params):
    with capture(execute=True):
        return signed_post(client, INBOUND_URL, params)


def sms_consent() -> str:
    return Consent.objects.get(contact__phone="+14155550100", channel="sms").status


def test_inbound_sms_lands_in_the_dossier_and_the_operators_queue(client, django_capture_on_commit_callbacks):
    started = time.perf_counter()
    response = receive(client, django_capture_on_commit_callbacks, inbound("Is my order ready?"))
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    assert response.content.decode() == '<?xml version="1.0" encoding="UTF-8"?><Response />'
    contact = Contact.objects.get(phone="+14155550100")
    message = Message.objects.get(direction="inbound")
    assert (message.contact, message.body, message.channel) == (contact, "Is my order ready?", "sms")
    task = Task.objects.get(type="sms.inbound")
    assert (task.status, task.contact, message.task) == (S.IN_PROGRESS, contact, task)
    conversation = Conversation.objects.get()  # the operators' inbox: the contact's conversation
    assert (conversation.status, conversation.contact, conversation.unread) == ("open", contact, 1)
    assert list(conversation.held_tasks.values_list("task_id", flat=True)) == [task.pk]


@pytest.mark.parametrize("body", ["STOP", "stop", "  Stop  ", "STOP!", "unsubscribe.", "Cancel", "end", "QUIT",
                                  "stopall", "revoke", "OptOut"])  # fmt: skip
def test_opt_out_keywords(client, django_capture_on_commit_callbacks, body):
    receive(client, django_capture_on_commit_callbacks, inbound(body))
    assert sms_consent() == "opted_out"
    change = ConsentChange.objects.get()
    assert (change.source, change.detail) == ("keyword", body.strip())
    assert change.created_at is not None


@pytest.mark.parametrize("body", ["stop please", "STOP STOP", "don't stop", "STOPP", "stop-it"])
def test_sentences_are_ordinary_messages(client, django_capture_on_commit_callbacks, body):
    receive(client, django_capture_on_commit_callbacks, inbound(body))
    assert not Consent.objects.exists()
    assert Task.objects.get().payload["keyword"] == ""


@pytest.mark.parametrize("body", ["START", "unstop", "Yes."])
def test_opt_in_keywords_after_stop(client, django_capture_on_commit_callbacks, body):
    receive(client, django_capture_on_commit_callbacks, inbound("STOP"))
    receive(client, django_capture_on_commit_callbacks, inbound(body))
    assert sms_consent() == "opted_in"


@pytest.mark.parametrize("body", ["HELP", "help?", " Info "])
def test_help_gets_the_configured_reply_as_twiml(client, settings, django_capture_on_commit_callbacks, body):
    settings.MESSAGING_HELP_REPLY = "Acme: reply STOP to opt out & more"
    response = receive(client, django_capture_on_commit_callbacks, inbound(body))
    assert response.content.decode() == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Acme: reply STOP to opt out &amp; more'
        "</Message></Response>"
    )


def test_opt_out_type_from_advanced_opt_out_is_honoured(client, django_capture_on_commit_callbacks):
    receive(client, django_capture_on_commit_callbacks, inbound("Arrêt", OptOutType="STOP"))
    assert sms_consent() == "opted_out"
    response = receive(client, django_capture_on_commit_callbacks, inbound("AIDE", OptOutType="HELP"))
    assert "<Message>" not in response.content.decode()  # Twilio answered HELP itself


def test_sending_after_stop_fails_without_a_provider_call(
    client, fake_twilio, django_capture_on_commit_callbacks
):
    receive(client, django_capture_on_commit_callbacks, inbound("Stop"))
    with django_capture_on_commit_callbacks(execute=True):
        task, _ = task_create(type="sms.send", payload={"to": "+14155550100", "body": "A special offer"})
    task.refresh_from_db()
    assert (task.status, task.error_code) == (S.FAILED, "opted_out")
    assert fake_twilio.posts() == []


def test_duplicate_inbound_is_stored_once(client, django_capture_on_commit_callbacks):
    params = inbound("hello")
    receive(client, django_capture_on_commit_callbacks, params)
    receive(client, django_capture_on_commit_callbacks, params)
    assert (Message.objects.count(), Task.objects.count(), WebhookEvent.objects.count()) == (1, 1, 1)


def test_unsigned_inbound_is_refused(client):
    response = signed_post(client, INBOUND_URL, inbound("STOP"), token="a" * 32)
    assert response.status_code == 403
    assert not Message.objects.exists() and not Consent.objects.exists()


def test_whatsapp_inbound_opens_the_window_and_keeps_the_profile(client, django_capture_on_commit_callbacks):
    params = inbound("hola", sender="whatsapp:+14155550100", ProfileName="Ada", WaId="14155550100")
    receive(client, django_capture_on_commit_callbacks, params)
    contact = Contact.objects.get(phone="+14155550100")
    assert (contact.name, contact.whatsapp) == ("Ada", "whatsapp:+14155550100")
    assert contact.last_inbound_whatsapp_at is not None
    assert Task.objects.get().type == "whatsapp.inbound"
    assert Conversation.objects.get().channel == "whatsapp"


def test_media_is_downloaded_with_basic_auth_into_artifacts(
    client, fake_twilio, django_capture_on_commit_callbacks
):
    url = fake_twilio.add_media("ME1", b"\x89PNG fake image", "image/png")
    params = inbound("look", NumMedia="1", MediaUrl0=url, MediaContentType0="image/png")
    receive(client, django_capture_on_commit_callbacks, params)
    media_get = [r for r in fake_twilio.requests if r.path == "/media/ME1"]
    assert media_get and media_get[0].auth == (ACCOUNT, TOKEN)
    artifact = Artifact.objects.get()
    assert (artifact.kind, artifact.content_type, artifact.size, artifact.source_url) == (
        "media",
        "image/png",
        15,
        url,
    )
    message = Message.objects.get()
    assert message.media == [{"url": url, "content_type": "image/png", "artifact": str(artifact.id)}]
    assert artifact.task_id == message.task_id


def test_token_is_never_in_the_response(client, django_capture_on_commit_callbacks):
    response = receive(client, django_capture_on_commit_callbacks, inbound("HELP"))
    assert TOKEN not in response.content.decode()


def test_media_never_fetched_is_picked_up_by_the_periodic_job(fake_twilio):
    """The message row is the outbox: media whose download was never queued (Redis down) is
    queued by ``media_pending_fetch`` once old enough, fetched once, and given up after 10 rounds."""
    from datetime import timedelta

    from django.utils import timezone

    from agents.messaging.inbound import MEDIA_MAX_PICKUPS, media_pending_fetch

    url = fake_twilio.add_media("ME9", b"\x89PNG late", "image/png")
    contact = Contact.objects.create(phone="+14155550100")
    old = timezone.now() - timedelta(minutes=5)
    message = Message.objects.create(contact=contact, channel="sms", direction="inbound", body="",
                                     media=[{"url": url, "content_type": "image/png"}], occurred_at=old)  # fmt: skip
    Message.objects.create(contact=contact, channel="sms", direction="inbound", body="", occurred_at=old,
                           media=[{"url": url + "x", "content_type": "image/png", "pickups": MEDIA_MAX_PICKUPS}])  # fmt: skip
    fresh = Message.objects.create(contact=contact, channel="sms", direction="inbound", body="",
                                   media=[{"url": url, "content_type": "image/png"}], occurred_at=timezone.now())  # fmt: skip
    assert media_pending_fetch(min_age_seconds=30) == 1  # not the fresh one, not the given-up one
    message.refresh_from_db()
    artifact = Artifact.objects.get(kind="media")
    assert message.media[0]["artifact"] == str(artifact.id) and artifact.size == len(b"\x89PNG late")
    assert media_pending_fetch(min_age_seconds=30) == 0  # fetched: nothing left
    assert not Message.objects.get(id=fresh.id).media[0].get("artifact")


def test_the_pending_fetch_commands_share_the_kits_command(fake_twilio):
    """fetch_pending_media and fetch_pending_recordings: one kit class (agents.common.commands),
    each calling its agent's service with the command's options."""
    from datetime import timedelta
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone

    url = fake_twilio.add_media("ME8", b"\x89PNG cmd", "image/png")
    contact = Contact.objects.create(phone="+14155550100")
    Message.objects.create(contact=contact, channel="sms", direction="inbound", body="", occurred_at=timezone.now()
                           - timedelta(minutes=5), media=[{"url": url, "content_type": "image/png"}])  # fmt: skip
    out = StringIO()
    call_command("fetch_pending_media", "--older-than", "600", stdout=out)  # too young for that
    assert out.getvalue().strip() == "queued 0 message(s) for media download"
    call_command("fetch_pending_media", "--older-than", "30", stdout=out)
    assert out.getvalue().splitlines()[-1] == "queued 1 message(s) for media download"
    assert Artifact.objects.filter(kind="media").count() == 1
    call_command("fetch_pending_recordings", stdout=out)
    assert out.getvalue().splitlines()[-1] == "queued 0 recording(s) for download"
