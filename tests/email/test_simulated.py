"""Test mode end to end: the simulated provider posts signed SendGrid event batches over
HTTP to our own webhook (a live server), which finishes the task."""

from __future__ import annotations

import pytest

from agents.email.providers.simulated import message_id
from dossiers.models import Contact, Email
from orchestrator.models import Task
from orchestrator.services import task_create
from tests.support.services import transactional_db, wait_until


@transactional_db
def test_simulated_send_delivers_signed_events_that_finish_the_task(live_server, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    settings.SENDGRID_EVENT_PUBLIC_KEY = ""  # test mode: the key derived from SECRET_KEY
    ada = Contact.objects.create(name="Ada", email="ada@example.org")

    task, _ = task_create(type="email.send", contact_id=ada.id, payload={"subject": "Hi", "text": "Hello"})

    email = Email.objects.get(task_id=task.id)
    wait_until(lambda: Email.objects.get(id=email.id).status == "opened", timeout=10, message="open event")
    task = Task.objects.get(id=task.id)
    email.refresh_from_db()
    assert task.status == "succeeded"
    assert task.provider_id == email.provider_message_id
    assert len(email.provider_message_id) == 22
    assert email.provider == "simulated"
    assert list(email.events.values_list("event", flat=True)) == ["processed", "delivered", "open"]
    assert all(e.detail["sg_message_id"].startswith(email.provider_message_id) for e in email.events.all())


def test_message_ids_look_like_sendgrids():
    ids = {message_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 22 and i.replace("-", "").replace("_", "").isalnum() for i in ids)


@pytest.mark.django_db
def test_unsubscribe_link_opts_out_with_one_click(client, settings):
    from agents.email.services import unsubscribe_url
    from dossiers.services import consent_status

    ada = Contact.objects.create(name="Ada", email="ada@example.org")
    email = Email.objects.create(contact=ada, to_address=ada.email, from_address="x@example.com",
                                 occurred_at="2026-01-01T00:00:00Z")  # fmt: skip
    path = unsubscribe_url(email_id=email.id).removeprefix(settings.PUBLIC_BASE_URL)

    assert client.get(path).status_code == 200
    assert consent_status(contact_id=ada.id, channel="email") == "unknown"
    assert client.post(path[:-3] + "xx/").status_code == 404  # tampered
    assert client.post(path, {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert consent_status(contact_id=ada.id, channel="email") == "opted_out"
