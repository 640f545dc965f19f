"""The inbox (conversations): one row per contact and channel, take (one winner), reply,
opt-outs, WhatsApp window, canned responses, SLA flags, round robin; the old per-message
queue's URLs lead here."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, ConversationTask
from dashboard.live import INBOX_GROUP, publish_inbox_update
from dashboard.models import CannedResponse
from dossiers.models import Contact
from dossiers.services import consent_set
from orchestrator.models import Task
from tests.dashboard.conftest import inbound, register_console_types
from tests.support.services import transactional_db, unavailable


@pytest.fixture(autouse=True)
def _types(console_types):
    pass


def conversation_of(task: Task) -> Conversation:
    return ConversationTask.objects.select_related("conversation").get(task=task).conversation


def test_inbox_lists_conversations_longest_waiting_first(staff_client, ada):
    grace = Contact.objects.create(name="Grace Hopper", phone="+14155550102")
    first = inbound(ada, "first question")
    second = inbound(grace, "second question")
    Conversation.objects.filter(contact=ada).update(waiting_since=timezone.now() - timedelta(minutes=3))

    page = staff_client.get(reverse("dashboard:conversations") + "?folder=all")

    assert page.status_code == 200
    html = page.content.decode()
    assert html.index("Ada Lovelace") < html.index("Grace Hopper")
    assert {conversation_of(first).contact, conversation_of(second).contact} == {ada, grace}


def test_the_old_queue_urls_lead_to_the_conversations_inbox(staff_client, ada):
    inbound(ada, "hello")
    for url in ("/admin/inbox/", "/admin/inbox/12/"):
        response = staff_client.get(url)
        assert response.status_code == 302 and response["Location"] == reverse("dashboard:conversations")


def test_inbox_page_needs_staff(client, vera):
    client.force_login(vera)
    assert client.get(reverse("dashboard:conversations")).status_code == 302  # to the admin login
    assert client.get("/admin/inbox/").status_code == 302
    assert client.get("/admin/inbox/").url.startswith("/admin/login/")


def test_claim_then_reply_creates_the_send_task_and_shows_it_in_the_thread(staff_client, olivia, ada):
    task = inbound(ada, "Where is my parcel?")
    url = reverse("dashboard:conversation", args=[conversation_of(task).pk])

    staff_client.post(url, {"action": "claim"})
    staff_client.post(url, {"action": "reply", "body": "Tomorrow morning."})

    reply = Task.objects.get(type="sms.send")
    assert reply.payload == {"to": ada.phone, "body": "Tomorrow morning."}
    assert reply.parent_id == task.pk and reply.contact_id == ada.pk
    assert "Tomorrow morning." in staff_client.get(url).content.decode()  # pending until the agent stores it
    assert conversation_of(task).assignee == olivia


def test_reply_needs_the_claim(staff_client, oscar, ada):
    task = inbound(ada, "hello")
    conv = conversation_of(task)
    assert services.conversation_claim(conversation_id=conv.pk, user=oscar)
    url = reverse("dashboard:conversation", args=[conv.pk])

    response = staff_client.post(url, {"action": "claim"}, follow=True)

    assert "Already taken by oscar" in response.content.decode()
    staff_client.post(url, {"action": "reply", "body": "hi"})
    assert not Task.objects.filter(type="sms.send").exists()


def test_opted_out_contact_is_marked_and_cannot_be_replied_to(staff_client, olivia, ada):
    task = inbound(ada, "STOP")
    consent_set(contact_id=ada.pk, channel="sms", status="opted_out", source="keyword", detail="STOP")
    conv = conversation_of(task)

    assert (
        "opted out" in staff_client.get(reverse("dashboard:conversations") + "?folder=all").content.decode()
    )
    services.conversation_claim(conversation_id=conv.pk, user=olivia)
    with pytest.raises(services.ConversationRefused, match="opted out of sms"):
        services.conversation_reply(conversation_id=conv.pk, user=olivia, body="Sorry to see you go")
    page = staff_client.get(reverse("dashboard:conversation", args=[conv.pk])).content.decode()
    assert 'id="cc-opted-out"' in page and 'id="cc-reply"' not in page
    assert not Task.objects.filter(type="sms.send").exists()


def claimed_outside_the_window(contact, operator) -> tuple[Conversation, str]:
    """An inbound WhatsApp message from ``contact`` 25 hours after their last one, claimed."""
    task = inbound(contact, "hola", channel="whatsapp")
    Contact.objects.filter(pk=contact.pk).update(
        last_inbound_whatsapp_at=timezone.now() - timedelta(hours=25)
    )
    conv = conversation_of(task)
    services.conversation_claim(conversation_id=conv.pk, user=operator)
    return conv, reverse("dashboard:conversation", args=[conv.pk])


def test_whatsapp_outside_the_window_offers_templates_not_free_text(staff_client, olivia, ada):
    from agents.messaging.models import MessageTemplate

    MessageTemplate.objects.create(name="order_update", channel="whatsapp", body="Your order {{ status }}",
                                   content_sid="HX" + "0" * 32, content_variables={"1": "status"})  # fmt: skip
    conv, url = claimed_outside_the_window(ada, olivia)

    page = staff_client.get(url).content.decode()
    assert "order_update" in page and 'id="cc-reply"' not in page
    with pytest.raises(services.ConversationRefused, match="24-hour"):
        services.conversation_reply(conversation_id=conv.pk, user=olivia, body="free text")
    staff_client.post(url, {"action": "reply", "template": "order_update", "var_1": "shipped"})

    reply = Task.objects.get(type="whatsapp.send")
    assert reply.payload == {"to": ada.whatsapp, "template": "order_update", "variables": {"1": "shipped"}}


def test_outside_the_window_the_messaging_agents_approved_templates_are_offered(staff_client, olivia, ada):
    """The console reads them through the orchestrator's registry (a hook the messaging agent
    registers), never by importing the agent: only templates with a Content SID qualify."""
    from agents.messaging.models import MessageTemplate

    MessageTemplate.objects.create(name="visit_reminder", channel="whatsapp", body="See you {{ date }}",
                                   content_sid="HX" + "1" * 32, content_variables={"2": "time", "1": "date"})  # fmt: skip
    MessageTemplate.objects.create(name="free_form_only", channel="whatsapp", body="Hi")
    _, url = claimed_outside_the_window(ada, olivia)

    page = staff_client.get(url).content.decode()
    assert "visit_reminder" in page and "free_form_only" not in page
    staff_client.post(
        url, {"action": "reply", "template": "visit_reminder", "var_1": "Monday", "var_2": "9:00"}
    )
    reply = Task.objects.get(type="whatsapp.send")
    assert reply.payload["template"] == "visit_reminder"
    assert reply.payload["variables"] == {"1": "Monday", "2": "9:00"}


def test_whatsapp_inside_the_window_takes_free_text(olivia, ada):
    task = inbound(ada, "hola", channel="whatsapp")
    Contact.objects.filter(pk=ada.pk).update(last_inbound_whatsapp_at=timezone.now() - timedelta(hours=1))
    conv = conversation_of(task)
    services.conversation_claim(conversation_id=conv.pk, user=olivia)

    reply = services.conversation_reply(conversation_id=conv.pk, user=olivia, body="¡Hola!")

    assert reply.type == "whatsapp.send" and reply.payload == {"to": ada.whatsapp, "body": "¡Hola!"}


def test_canned_responses_are_offered_and_resolve_closes(staff_client, olivia, ada):
    CannedResponse.objects.create(title="Shipping times", body="We ship within 2 days.", channel="sms")
    CannedResponse.objects.create(title="WhatsApp only", body="x", channel="whatsapp")
    task = inbound(ada, "how long?")
    conv = conversation_of(task)
    services.conversation_claim(conversation_id=conv.pk, user=olivia)
    url = reverse("dashboard:conversation", args=[conv.pk])

    page = staff_client.get(url).content.decode()
    assert "Shipping times" in page and "WhatsApp only" not in page
    staff_client.post(url, {"action": "resolve"})

    conv.refresh_from_db()
    assert conv.resolved_at is not None and conv.status == "resolved"
    listed = staff_client.get(reverse("dashboard:conversations") + "?folder=all").content.decode()
    assert f'data-conversation="{conv.pk}"' not in listed


def test_unanswered_too_long_is_flagged(ada, settings):
    settings.CONVERSATION_FIRST_RESPONSE_SECONDS = 60
    grace = Contact.objects.create(name="Grace Hopper", phone="+14155550102")
    old, new = conversation_of(inbound(ada, "old")), conversation_of(inbound(grace, "new"))
    Conversation.objects.filter(pk=old.pk).update(sla_due_at=timezone.now() - timedelta(seconds=1))

    assert services.conversations_flag_sla() == 1
    assert list(Conversation.objects.filter(sla_breached=True).values_list("pk", flat=True)) == [old.pk]
    new.refresh_from_db()
    assert not new.sla_breached


def test_auto_assignment_round_robin_under_capacity(ada, olivia, oscar, vera, settings):
    settings.CONVERSATION_AUTO_ASSIGN = True
    services.operator_set_availability(user=olivia, available=True, capacity=1)
    services.operator_set_availability(user=oscar, available=True, capacity=5)
    services.operator_set_availability(user=vera, available=True, capacity=5)  # not staff: never assigned
    people = [ada] + [Contact.objects.create(name=f"C{n}", phone=f"+1415555020{n}") for n in range(2)]
    tasks = [inbound(person, f"message {n}") for n, person in enumerate(people)]

    owners = [conversation_of(t).assignee for t in tasks]
    assert owners.count(olivia) == 1  # her capacity
    assert owners.count(oscar) == 2
    assert vera not in owners


def test_publish_inbox_update_reaches_the_group(django_capture_on_commit_callbacks, ada):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(INBOX_GROUP, channel)
    with django_capture_on_commit_callbacks(execute=True):
        publish_inbox_update(ada.pk, reason="arrived")
    message = async_to_sync(layer.receive)(channel)
    assert message == {"type": "inbox.update", "task_id": str(ada.pk), "reason": "arrived"}


@transactional_db
def test_two_operators_claiming_at_once_exactly_one_wins(django_user_model):
    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL for concurrent claims from two connections")
    register_console_types()
    ada = Contact.objects.create(name="Ada", phone="+14155550101")
    operators = [
        django_user_model.objects.create_user(f"op{n}", f"op{n}@example.com", "pw", is_staff=True)
        for n in range(2)
    ]
    conv = conversation_of(inbound(ada, "race"))
    barrier = threading.Barrier(2)
    results: dict[str, bool] = {}

    def claim(user) -> None:
        try:
            barrier.wait(5)
            results[user.username] = services.conversation_claim(conversation_id=conv.pk, user=user)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(u,)) for u in operators]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert sorted(results.values()) == [False, True]
    winner = next(name for name, won in results.items() if won)
    assert Conversation.objects.get(pk=conv.pk).assignee.username == winner


def test_inbox_page_queries_do_not_grow_with_the_inbox(staff_client, ada, django_assert_max_num_queries):
    url = reverse("dashboard:conversations") + "?folder=all"
    inbound(ada, "one")
    staff_client.get(url)
    with django_assert_max_num_queries(15) as few:
        staff_client.get(url)
    baseline = len(few.captured_queries)  # read now: the next request resets Django's query log
    for n in range(15):
        inbound(Contact.objects.create(name=f"Customer {n}", phone=f"+141555503{n:02d}"), f"message {n}")
    with django_assert_max_num_queries(baseline):
        page = staff_client.get(url)
    assert page.content.decode().count("data-conversation=") == 16


def test_the_list_shows_the_customers_last_words_and_release_gives_it_back(staff_client, olivia, ada):
    conv = conversation_of(inbound(ada, "first words"))
    inbound(ada, "Is anyone there?")
    unassigned = reverse("dashboard:conversations") + "?folder=unassigned"
    row = staff_client.get(unassigned).content.decode().split(f'data-conversation="{conv.pk}"')[1]
    assert "Is anyone there?" in row.split("</tr>")[0]
    url = reverse("dashboard:conversation", args=[conv.pk])
    staff_client.post(url, {"action": "claim"})
    assert f'data-conversation="{conv.pk}"' not in staff_client.get(unassigned).content.decode()

    page = staff_client.post(url, {"action": "release"}, follow=True).content.decode()

    assert "Released" in page
    conv.refresh_from_db()
    assert conv.assignee is None
    assert f'data-conversation="{conv.pk}"' in staff_client.get(unassigned).content.decode()
