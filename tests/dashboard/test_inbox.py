"""The inbound queue: lazily created rows, claim (one winner), reply, opt-outs, WhatsApp window."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from dashboard import services
from dashboard.live import INBOX_GROUP, publish_inbox_update
from dashboard.models import CannedResponse, InboxItem, OperatorProfile
from dossiers.models import Contact
from dossiers.services import consent_set
from orchestrator.models import Task
from tests.dashboard.conftest import inbound, register_console_types
from tests.support.services import transactional_db, unavailable


@pytest.fixture(autouse=True)
def _types(console_types):
    pass


def test_queue_lists_inbound_messages_oldest_first_and_creates_rows_lazily(staff_client, ada):
    grace = Contact.objects.create(name="Grace Hopper", phone="+14155550102")
    first = inbound(ada, "first question")
    second = inbound(grace, "second question")
    Task.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(minutes=3))
    assert InboxItem.objects.count() == 0

    page = staff_client.get(reverse("dashboard:inbox"))

    assert page.status_code == 200
    html = page.content.decode()
    assert html.index("first question") < html.index("second question")
    assert set(InboxItem.objects.values_list("task_id", flat=True)) == {first.pk, second.pk}


def test_queue_page_needs_staff(client, vera):
    client.force_login(vera)
    assert client.get(reverse("dashboard:inbox")).status_code == 302  # to the admin login


def test_claim_then_reply_creates_the_send_task_and_shows_it_in_the_thread(staff_client, olivia, ada):
    task = inbound(ada, "Where is my parcel?")
    services.inbox_sync()
    item = InboxItem.objects.get(task=task)
    url = reverse("dashboard:inbox-item", args=[item.pk])

    staff_client.post(url, {"action": "claim"})
    staff_client.post(url, {"action": "reply", "body": "Tomorrow morning."})

    reply = Task.objects.get(type="sms.send")
    assert reply.payload == {"to": ada.phone, "body": "Tomorrow morning."}
    assert reply.parent_id == task.pk and reply.contact_id == ada.pk
    assert "Tomorrow morning." in staff_client.get(url).content.decode()
    item.refresh_from_db()
    assert item.claimed_by == olivia


def test_reply_needs_the_claim(staff_client, oscar, ada):
    task = inbound(ada, "hello")
    services.inbox_sync()
    item = InboxItem.objects.get(task=task)
    assert services.inbox_claim(item_id=item.pk, user=oscar)
    url = reverse("dashboard:inbox-item", args=[item.pk])

    response = staff_client.post(url, {"action": "claim"}, follow=True)

    assert "Already claimed by oscar" in response.content.decode()
    staff_client.post(url, {"action": "reply", "body": "hi"})
    assert not Task.objects.filter(type="sms.send").exists()


def test_opted_out_contact_is_marked_and_cannot_be_replied_to(staff_client, olivia, ada):
    task = inbound(ada, "STOP")
    consent_set(contact_id=ada.pk, channel="sms", status="opted_out", source="keyword", detail="STOP")
    services.inbox_sync()
    item = InboxItem.objects.get(task=task)

    assert "opted out" in staff_client.get(reverse("dashboard:inbox")).content.decode()
    services.inbox_claim(item_id=item.pk, user=olivia)
    with pytest.raises(services.ReplyRefused, match="opted out of sms"):
        services.inbox_reply(item_id=item.pk, user=olivia, body="Sorry to see you go")
    page = staff_client.get(reverse("dashboard:inbox-item", args=[item.pk])).content.decode()
    assert 'id="cc-opted-out"' in page and 'id="cc-reply"' not in page
    assert not Task.objects.filter(type="sms.send").exists()


def claimed_outside_the_window(contact, operator) -> tuple[InboxItem, str]:
    """An inbound WhatsApp message from ``contact`` 25 hours after their last one, claimed."""
    task = inbound(contact, "hola", channel="whatsapp")
    Contact.objects.filter(pk=contact.pk).update(
        last_inbound_whatsapp_at=timezone.now() - timedelta(hours=25)
    )
    services.inbox_sync()
    item = InboxItem.objects.get(task=task)
    services.inbox_claim(item_id=item.pk, user=operator)
    return item, reverse("dashboard:inbox-item", args=[item.pk])


def test_whatsapp_outside_the_window_offers_templates_not_free_text(staff_client, olivia, ada, settings):
    settings.WHATSAPP_TEMPLATES = [
        {
            "name": "order_update",
            "content_sid": "HX" + "0" * 32,
            "variables": ["1"],
            "preview": "Your order {{1}}",
        }
    ]
    item, url = claimed_outside_the_window(ada, olivia)

    page = staff_client.get(url).content.decode()
    assert "order_update" in page and 'id="cc-reply"' not in page
    with pytest.raises(services.ReplyRefused, match="24-hour"):
        services.inbox_reply(item_id=item.pk, user=olivia, body="free text")
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
    services.inbox_sync()
    item = InboxItem.objects.get(task=task)
    services.inbox_claim(item_id=item.pk, user=olivia)

    reply = services.inbox_reply(item_id=item.pk, user=olivia, body="¡Hola!")

    assert reply.type == "whatsapp.send" and reply.payload == {"to": ada.whatsapp, "body": "¡Hola!"}


def test_canned_responses_are_offered_and_resolve_closes(staff_client, olivia, ada):
    CannedResponse.objects.create(title="Shipping times", body="We ship within 2 days.", channel="sms")
    CannedResponse.objects.create(title="WhatsApp only", body="x", channel="whatsapp")
    task = inbound(ada, "how long?")
    services.inbox_sync()
    item = InboxItem.objects.get(task=task)
    services.inbox_claim(item_id=item.pk, user=olivia)
    url = reverse("dashboard:inbox-item", args=[item.pk])

    page = staff_client.get(url).content.decode()
    assert "Shipping times" in page and "WhatsApp only" not in page
    staff_client.post(url, {"action": "resolve"})

    item.refresh_from_db()
    assert item.resolved_at is not None
    assert "how long?" not in staff_client.get(reverse("dashboard:inbox")).content.decode()


def test_unclaimed_too_long_is_flagged(ada, settings):
    settings.INBOX_UNCLAIMED_FLAG_SECONDS = 60
    old, new = inbound(ada, "old"), inbound(ada, "new")
    services.inbox_sync()
    InboxItem.objects.filter(task=old).update(received_at=timezone.now() - timedelta(seconds=61))

    assert services.inbox_flag_unclaimed() == 1
    assert list(InboxItem.objects.filter(flagged=True).values_list("task_id", flat=True)) == [old.pk]
    assert not InboxItem.objects.get(task=new).flagged


def test_auto_assignment_round_robin_under_capacity(ada, olivia, oscar, vera, settings):
    settings.INBOX_AUTO_ASSIGN = True
    OperatorProfile.objects.create(user=olivia, online=True, capacity=1)
    OperatorProfile.objects.create(user=oscar, online=True, capacity=5)
    OperatorProfile.objects.create(user=vera, online=True, capacity=5)  # not staff: never assigned
    tasks = [inbound(ada, f"message {n}") for n in range(3)]

    services.inbox_sync()

    owners = [InboxItem.objects.get(task=t).claimed_by for t in tasks]
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
    task = inbound(ada, "race")
    services.inbox_sync()
    item = InboxItem.objects.get(task=task)
    barrier = threading.Barrier(2)
    results: dict[str, bool] = {}

    def claim(user) -> None:
        try:
            barrier.wait(5)
            results[user.username] = services.inbox_claim(item_id=item.pk, user=user)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(u,)) for u in operators]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert sorted(results.values()) == [False, True]
    winner = next(name for name, won in results.items() if won)
    assert InboxItem.objects.get(pk=item.pk).claimed_by.username == winner


def test_queue_page_queries_do_not_grow_with_the_queue(staff_client, ada, django_assert_max_num_queries):
    inbound(ada, "one")
    staff_client.get(reverse("dashboard:inbox"))  # creates the rows
    with django_assert_max_num_queries(10) as few:
        staff_client.get(reverse("dashboard:inbox"))
    baseline = len(few.captured_queries)  # read now: the next request resets Django's query log
    grace = Contact.objects.create(name="Grace Hopper", phone="+14155550102")
    for n in range(15):
        inbound(grace if n % 2 else ada, f"message {n}")
    staff_client.get(reverse("dashboard:inbox"))
    with django_assert_max_num_queries(baseline):
        page = staff_client.get(reverse("dashboard:inbox"))
    assert page.content.decode().count("data-item=") == 16
