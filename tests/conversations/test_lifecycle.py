"""A conversation's life through signed webhooks and real sends: one per contact and channel,
reopened and woken by the customer, its inbound tasks final when resolved, STOP joins it."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

import pytest
from django.core.management import call_command
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, ConversationTask
from dossiers.models import Consent, Message
from orchestrator.models import Task, TaskEvent
from orchestrator.states import FINAL, TaskStatus
from tests.messaging.conftest import ACCOUNT, INBOUND_URL, signed_post

pytestmark = pytest.mark.django_db
S = TaskStatus
_sids = count(1)
ADA = "+14155550100"


def customer_writes(client, capture, body: str, *, sender: str = ADA) -> Task:
    sid = f"SM{next(_sids):032x}"
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": ACCOUNT, "From": sender, "To": "+15005550006",
              "Body": body, "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01"}  # fmt: skip
    with capture(execute=True):
        response = signed_post(client, INBOUND_URL, params)
    assert response.status_code == 200
    return Task.objects.filter(type="sms.inbound").order_by("-created_at").first()


def test_inbound_assign_reply_resolve_then_the_customer_reopens_the_same_conversation(
    client, operators, fake_twilio, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    olivia = operators[0]
    first = customer_writes(client, capture, "Where is my parcel?")
    conv = Conversation.objects.get()
    assert (conv.status, conv.assignee, conv.unread, conv.channel) == ("open", None, 1, "sms")
    assert conv.waiting_since is not None and conv.sla_due_at is not None
    second = customer_writes(client, capture, "Hello?")
    conv.refresh_from_db()
    assert Conversation.objects.count() == 1 and conv.unread == 2  # a follow-up joins, no new row
    assert set(ConversationTask.objects.values_list("task_id", flat=True)) == {first.pk, second.pk}

    assert services.conversation_claim(conversation_id=conv.pk, user=olivia)
    with capture(execute=True):
        reply = services.conversation_reply(conversation_id=conv.pk, user=olivia, body="Tomorrow morning.")
    assert [p.form["Body"] for p in fake_twilio.posts()] == [["Tomorrow morning."]]  # sent through the SDK
    assert Message.objects.get(task=reply, direction="outbound").body == "Tomorrow morning."
    conv.refresh_from_db()
    assert conv.waiting_since is None and conv.first_response_seconds is not None  # the reply joined

    assert services.conversation_resolve(conversation_id=conv.pk, user=olivia) == 2
    for task in (first, second):
        task.refresh_from_db()
        assert task.status in FINAL and task.status == S.SUCCEEDED
        assert TaskEvent.objects.filter(task=task, to_status=S.SUCCEEDED, actor="operator:olivia").exists()
    conv.refresh_from_db()
    assert conv.status == "resolved"

    third = customer_writes(client, capture, "It did not come.")
    conv.refresh_from_db()
    assert Conversation.objects.count() == 1
    assert (conv.status, conv.assignee, conv.unread) == ("open", olivia, 1)  # reopened, same conversation
    assert conv.events.filter(kind="reopened").exists()
    assert ConversationTask.objects.get(task=third).finished is False


def test_snooze_wakes_on_a_message(client, operators, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    customer_writes(client, capture, "question")
    conv = Conversation.objects.get()
    services.conversation_snooze(
        conversation_id=conv.pk, user=operators[0], until=timezone.now() + timedelta(days=1)
    )
    conv.refresh_from_db()
    assert conv.status == "snoozed"

    customer_writes(client, capture, "any news?")

    conv.refresh_from_db()
    assert (conv.status, conv.snoozed_until) == ("open", None)
    assert conv.events.filter(kind="woken").exists()


def test_snooze_wakes_on_its_time_through_the_sweep_command(
    client, operators, django_capture_on_commit_callbacks
):
    customer_writes(client, django_capture_on_commit_callbacks, "question")
    conv = Conversation.objects.get()
    services.conversation_snooze(
        conversation_id=conv.pk, user=operators[0], until=timezone.now() + timedelta(hours=1)
    )
    call_command("conversations_sweep")
    conv.refresh_from_db()
    assert conv.status == "snoozed"  # not yet
    Conversation.objects.filter(pk=conv.pk).update(snoozed_until=timezone.now() - timedelta(seconds=1))

    call_command("conversations_sweep")

    conv.refresh_from_db()
    assert (conv.status, conv.snoozed_until) == ("open", None)


def test_stop_joins_the_existing_conversation_and_marks_consent(
    client, operators, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    customer_writes(client, capture, "Is my order ready?")
    conv = Conversation.objects.get()
    services.conversation_claim(conversation_id=conv.pk, user=operators[0])

    stop = customer_writes(client, capture, "STOP")

    assert Conversation.objects.count() == 1  # no new unclaimed row
    conv.refresh_from_db()
    assert conv.assignee == operators[0] and conv.unread == 1  # a keyword asks nothing of the operator
    assert ConversationTask.objects.get(task=stop).conversation == conv
    assert Consent.objects.get(contact=conv.contact, channel="sms").status == "opted_out"
    with pytest.raises(services.ConversationRefused, match="opted out"):
        services.conversation_reply(conversation_id=conv.pk, user=operators[0], body="Sorry to see you go")


def test_stop_on_a_resolved_conversation_does_not_reopen_it_and_its_task_is_final(
    client, operators, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    customer_writes(client, capture, "thanks, bye")
    conv = Conversation.objects.get()
    services.conversation_resolve(conversation_id=conv.pk, user=operators[0])

    stop = customer_writes(client, capture, "STOP")

    conv.refresh_from_db()
    stop.refresh_from_db()
    assert conv.status == "resolved" and stop.status in FINAL


def test_outbound_alone_opens_no_conversation(fake_twilio, django_capture_on_commit_callbacks):
    from orchestrator.services import task_create

    with django_capture_on_commit_callbacks(execute=True):
        task_create(type="sms.send", payload={"to": ADA, "body": "Your code is 1234"})
    assert Message.objects.filter(direction="outbound").exists()
    assert not Conversation.objects.exists()  # a campaign's message opens nothing


def test_outbound_to_a_contact_the_send_creates_costs_no_conversation_statement(
    fake_twilio, django_capture_on_commit_callbacks
):
    """A campaign's send creates its contact: nothing can be joined, so nothing is looked up."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from orchestrator.services import task_create

    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        task, _ = task_create(type="sms.send", payload={"to": ADA, "body": "Your code is 1234"})
    assert Task.objects.get(pk=task.pk).status == TaskStatus.IN_PROGRESS
    assert not [q["sql"] for q in queries.captured_queries if "conversations_conversation" in q["sql"]]


def test_outbound_to_a_known_contact_still_joins_its_conversation(
    client, fake_twilio, django_capture_on_commit_callbacks
):
    from orchestrator.services import task_create

    customer_writes(client, django_capture_on_commit_callbacks, "Is my order ready?")
    conv = Conversation.objects.get()
    assert conv.waiting_since is not None
    with django_capture_on_commit_callbacks(execute=True):
        task_create(type="sms.send", payload={"to": ADA, "body": "Yes, since this morning."})
    conv.refresh_from_db()
    assert conv.last_reply_at is not None and conv.waiting_since is None
