"""The console's conversations pages: folders, taking a conversation, private notes that are
never sent, canned responses with variables, the supervisor view and its live updates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, PrivateNote
from dashboard.models import CannedResponse
from orchestrator.live import INBOX_GROUP
from orchestrator.models import Task
from tests.conversations.test_lifecycle import customer_writes

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(client, operators, django_capture_on_commit_callbacks) -> Conversation:
    customer_writes(client, django_capture_on_commit_callbacks, "Where is my parcel?")
    conv = Conversation.objects.get()
    conv.contact.name = "Ada Lovelace"
    conv.contact.save()
    return conv


def test_a_new_conversation_is_unassigned_then_taken_and_listed_as_mine(client, operators, conversation):
    olivia = operators[0]
    client.force_login(olivia)
    unassigned = client.get(reverse("dashboard:conversations") + "?folder=unassigned").content.decode()
    assert f'data-conversation="{conversation.pk}"' in unassigned and "Ada Lovelace" in unassigned

    response = client.post(reverse("dashboard:conversation", args=[conversation.pk]), {"action": "claim"})

    assert response.status_code == 302
    mine = client.get(reverse("dashboard:conversations") + "?folder=mine").content.decode()
    assert f'data-conversation="{conversation.pk}"' in mine
    assert (
        f'data-conversation="{conversation.pk}"'
        not in client.get(reverse("dashboard:conversations") + "?folder=unassigned").content.decode()
    )
    conversation.refresh_from_db()
    assert conversation.assignee == olivia and conversation.unread == 1
    client.get(reverse("dashboard:conversation", args=[conversation.pk]))  # the assignee reads it
    conversation.refresh_from_db()
    assert conversation.unread == 0


def test_a_second_operator_cannot_take_a_taken_conversation(client, operators, conversation):
    services.conversation_claim(conversation_id=conversation.pk, user=operators[1])
    client.force_login(operators[0])
    page = client.post(
        reverse("dashboard:conversation", args=[conversation.pk]), {"action": "claim"}, follow=True
    )
    assert "Already taken by oscar" in page.content.decode()
    conversation.refresh_from_db()
    assert conversation.assignee == operators[1]


def test_a_private_note_is_stored_shown_to_operators_and_never_sent(
    client, operators, fake_twilio, conversation
):
    client.force_login(operators[0])
    tasks_before = Task.objects.count()
    url = reverse("dashboard:conversation", args=[conversation.pk])

    client.post(url, {"action": "note", "body": "Customer is a VIP, be quick"})

    assert PrivateNote.objects.get().body == "Customer is a VIP, be quick"
    assert Task.objects.count() == tasks_before and fake_twilio.posts() == []  # nothing went out
    page = client.get(url).content.decode()
    notes, thread = page.split('id="cc-notes"')[1], page.split('id="cc-thread"')[1].split("</section>")[0]
    assert "Customer is a VIP" in notes and "Customer is a VIP" not in thread


def test_canned_responses_fill_in_the_contacts_name(client, operators, conversation):
    CannedResponse.objects.create(
        title="Greeting", body="Hi {{ contact.first_name }}, {{ operator.name }} here."
    )
    services.conversation_claim(conversation_id=conversation.pk, user=operators[0])
    client.force_login(operators[0])
    page = client.get(reverse("dashboard:conversation", args=[conversation.pk])).content.decode()
    assert 'data-body="Hi Ada, olivia here."' in page


def test_operators_cannot_assign_others_or_see_the_supervisor_view(client, operators, conversation):
    olivia, oscar, _ = operators
    client.force_login(olivia)
    url = reverse("dashboard:conversation", args=[conversation.pk])
    assert client.post(url, {"action": "assign", "to": oscar.pk}).status_code == 403
    assert client.get(reverse("dashboard:supervisor")).status_code == 403
    conversation.refresh_from_db()
    assert conversation.assignee is None


def test_supervisor_assigns_and_sees_the_sla_count_change_live(client, operators, conversation, settings,
                                                               django_capture_on_commit_callbacks):  # fmt: skip
    olivia, oscar, _ = operators
    oscar.groups.set([Group.objects.get(name="supervisor")])
    client.force_login(oscar)
    client.post(
        reverse("dashboard:conversation", args=[conversation.pk]), {"action": "assign", "to": olivia.pk}
    )
    conversation.refresh_from_db()
    assert conversation.assignee == olivia
    page = client.get(reverse("dashboard:supervisor")).content.decode()
    assert '<b id="cc-sla-breached">0</b>' in page

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(INBOX_GROUP, channel)
    Conversation.objects.filter(pk=conversation.pk).update(sla_due_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        services.conversations_flag_sla()

    message = async_to_sync(layer.receive)(channel)
    assert message == {
        "type": "inbox.update",
        "conversation_id": str(conversation.pk),
        "reason": "sla_breached",
    }
    assert (
        '<b id="cc-sla-breached">1</b>'
        in client.get(reverse("dashboard:supervisor") + "?partial=1").content.decode()
    )


def test_whatsapp_free_text_is_refused_outside_the_24_hour_window(operators, db):
    from dossiers.models import Contact

    ada = Contact.objects.create(name="Ada", phone="+14155550177", whatsapp="whatsapp:+14155550177",
                                 last_inbound_whatsapp_at=timezone.now() - timedelta(hours=25))  # fmt: skip
    conv = Conversation.objects.create(contact=ada, channel="whatsapp", assignee=operators[0])
    with pytest.raises(services.ConversationRefused, match="24-hour"):
        services.conversation_reply(conversation_id=conv.pk, user=operators[0], body="free text")
    assert not Task.objects.filter(type="whatsapp.send").exists()


def test_outside_the_window_the_template_picker_offers_the_approved_message_templates(client, operators, db):
    from agents.messaging.models import MessageTemplate
    from dossiers.models import Contact

    MessageTemplate.objects.create(name="order_update", channel="whatsapp", body="Your order {{ order }} moved.",
                                   content_sid="HX" + "1" * 32, content_variables={"1": "order"})  # fmt: skip
    MessageTemplate.objects.create(name="not_approved", channel="whatsapp", body="free")  # no Content SID
    ada = Contact.objects.create(name="Ada", phone="+14155550178", whatsapp="whatsapp:+14155550178",
                                 last_inbound_whatsapp_at=timezone.now() - timedelta(hours=30))  # fmt: skip
    conv = Conversation.objects.create(contact=ada, channel="whatsapp", assignee=operators[0])
    client.force_login(operators[0])
    url = reverse("dashboard:conversation", args=[conv.pk])

    page = client.get(url).content.decode()
    assert "order_update" in page and 'name="var_order"' in page
    assert "not_approved" not in page and 'id="cc-reply"' not in page
    client.post(url, {"action": "reply", "template": "order_update", "var_order": "A-17"})

    reply = Task.objects.get(type="whatsapp.send")
    assert reply.payload == {
        "to": "whatsapp:+14155550178",
        "template": "order_update",
        "variables": {"order": "A-17"},
    }
