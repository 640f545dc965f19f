"""Console test people and data: Olivia and Oscar are operators, Vera is not staff."""

from __future__ import annotations

import pytest
from django.utils import timezone

from dossiers.models import Contact, Message
from dossiers.signals import interaction_recorded
from orchestrator import registry
from orchestrator.models import AgentRegistration, Task
from orchestrator.services import task_create

# The agents' own branches seed these rows; here a handler that accepts the task and waits
# (as a real provider would until its callback) stands in for each.
CONSOLE_TYPES = {
    "sms.send": ("messaging", "sms"),
    "whatsapp.send": ("messaging", "whatsapp"),
    "sms.inbound": ("messaging", "sms"),
    "whatsapp.inbound": ("messaging", "whatsapp"),
    "call.outbound": ("voice", "voice"),
    "email.send": ("email", "email"),
}


def register_console_types() -> None:
    for task_type, (agent, channel) in CONSOLE_TYPES.items():
        AgentRegistration.objects.update_or_create(
            task_type=task_type,
            defaults={"agent": agent, "channel": channel, "queue": agent, "kind": "in_process",
                      "handler": "tests.support.handlers.accept_and_wait", "enabled": True},
        )  # fmt: skip
    registry.invalidate()


@pytest.fixture
def console_types(db) -> None:
    register_console_types()


@pytest.fixture
def olivia(django_user_model):
    return django_user_model.objects.create_user("olivia", "olivia@example.com", "pw-olivia-123", is_staff=True,
                                                 is_superuser=True)  # fmt: skip


@pytest.fixture
def oscar(django_user_model):
    return django_user_model.objects.create_user("oscar", "oscar@example.com", "pw-oscar-123", is_staff=True,
                                                 is_superuser=True)  # fmt: skip


@pytest.fixture
def vera(django_user_model):
    return django_user_model.objects.create_user("vera", "vera@example.com", "pw-vera-123")


@pytest.fixture
def staff_client(client, olivia):
    client.force_login(olivia)
    return client


@pytest.fixture
def ada(db) -> Contact:
    return Contact.objects.create(
        name="Ada Lovelace", phone="+14155550101", email="ada@example.com", whatsapp="whatsapp:+14155550101"
    )


def inbound(contact: Contact, body: str, *, channel: str = "sms") -> Task:
    """An inbound message as the messaging agent records it: a task, its dossier Message, and
    the dossier's ``interaction_recorded`` signal (sent here at once, as it is after commit),
    which joins it to the contact's conversation."""
    task, _ = task_create(type=f"{channel}.inbound", payload={"from": contact.phone, "body": body},
                          contact_id=contact.pk, correlation_id=f"conv-{contact.pk}")  # fmt: skip
    sender = contact.whatsapp if channel == "whatsapp" else contact.phone
    message = Message.objects.create(contact=contact, task=task, channel=channel, direction="inbound",
                                     from_address=sender, to_address="+14155550000", body=body,
                                     occurred_at=timezone.now())  # fmt: skip
    interaction_recorded.send_robust(sender="message", kind="message", object_id=message.pk, contact_id=contact.pk,
                                     channel=channel, direction="inbound", task_id=task.pk,
                                     occurred_at=message.occurred_at)  # fmt: skip
    return task
