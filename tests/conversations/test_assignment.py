"""Assignment: round robin among available operators under capacity, away gets nothing,
manual assign and transfer, two claims at once (one wins); SLA flags and the supervisor's count."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from conversations import selectors, services
from conversations.models import Conversation, Operator
from dossiers.models import Contact
from tests.conversations.test_lifecycle import customer_writes
from tests.support.services import transactional_db, unavailable

NUMBERS = [f"+1415555{n:04d}" for n in range(110, 120)]


@pytest.mark.django_db
def test_round_robin_respects_capacity_and_skips_away_operators(
    client, operators, settings, django_capture_on_commit_callbacks
):
    settings.CONVERSATION_AUTO_ASSIGN = True
    olivia, oscar, otto = operators
    services.operator_set_availability(user=olivia, available=True, capacity=1)
    services.operator_set_availability(user=oscar, available=True, capacity=3)
    services.operator_set_availability(user=otto, available=False, capacity=10)  # away

    for number in NUMBERS[:5]:
        customer_writes(client, django_capture_on_commit_callbacks, "hello", sender=number)

    owners = list(Conversation.objects.order_by("created_at").values_list("assignee__username", flat=True))
    assert owners[:2] == ["olivia", "oscar"]  # round robin: least recently assigned first
    assert owners.count("olivia") == 1 and owners.count("oscar") == 3  # each up to their capacity
    assert "otto" not in owners and owners.count(None) == 1  # away gets nothing; the fifth waits
    summary = {row["username"]: row["active"] for row in selectors.supervisor_figures()["operators"]}
    assert summary == {"olivia": 1, "oscar": 3, "otto": 0}


@pytest.mark.django_db
def test_resolving_frees_capacity_for_the_next_conversation(
    client, operators, settings, django_capture_on_commit_callbacks
):
    settings.CONVERSATION_AUTO_ASSIGN = True
    olivia = operators[0]
    services.operator_set_availability(user=olivia, available=True, capacity=1)
    customer_writes(client, django_capture_on_commit_callbacks, "one", sender=NUMBERS[0])
    customer_writes(client, django_capture_on_commit_callbacks, "two", sender=NUMBERS[1])
    first, second = Conversation.objects.order_by("created_at")
    assert (first.assignee, second.assignee) == (olivia, None)

    services.conversation_resolve(conversation_id=first.pk, user=olivia)
    assert services.conversation_auto_assign(conversation_id=second.pk) == olivia


@pytest.mark.django_db
def test_manual_assign_and_transfer_are_recorded(client, operators, django_capture_on_commit_callbacks):
    olivia, oscar, _ = operators
    customer_writes(client, django_capture_on_commit_callbacks, "hi")
    conv = Conversation.objects.get()

    services.conversation_assign(conversation_id=conv.pk, to=olivia, by=oscar)
    services.conversation_assign(conversation_id=conv.pk, to=oscar, by=olivia)

    conv.refresh_from_db()
    assert conv.assignee == oscar
    kinds = list(conv.events.filter(kind__in=["assigned", "transferred"]).values_list("kind", "details"))
    assert kinds[0][0] == "assigned" and kinds[1] == ("transferred", {"to": "oscar", "previous": "olivia",
                                                                       "how": "manual"})  # fmt: skip
    # Someone without the operator role cannot be given conversations.
    from django.contrib.auth import get_user_model

    outsider = get_user_model().objects.create_user("vera", "vera@example.com", "pw-vera-123", is_staff=True)
    with pytest.raises(services.ConversationRefused, match="cannot work conversations"):
        services.conversation_assign(conversation_id=conv.pk, to=outsider, by=olivia)


@transactional_db
def test_two_operators_claiming_at_once_exactly_one_wins(django_user_model):
    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL for concurrent claims from two connections")
    ada = Contact.objects.create(name="Ada", phone="+14155550101")
    conv = Conversation.objects.create(contact=ada, channel="sms", waiting_since=timezone.now())
    people = [django_user_model.objects.create_user(f"op{n}", f"op{n}@x.example", "pw") for n in range(2)]
    barrier = threading.Barrier(2)
    results: dict[str, bool] = {}

    def claim(user) -> None:
        try:
            barrier.wait(5)
            results[user.username] = services.conversation_claim(conversation_id=conv.pk, user=user)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(u,)) for u in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert sorted(results.values()) == [False, True]
    winner = next(name for name, won in results.items() if won)
    assert Conversation.objects.get(pk=conv.pk).assignee.username == winner
    assert conv.events.filter(kind="assigned").count() == 1


@pytest.mark.django_db
def test_unanswered_past_the_first_response_sla_is_flagged_and_counted(
    client, operators, settings, django_capture_on_commit_callbacks
):
    settings.CONVERSATION_FIRST_RESPONSE_SECONDS = 60
    customer_writes(client, django_capture_on_commit_callbacks, "late one", sender=NUMBERS[0])
    customer_writes(client, django_capture_on_commit_callbacks, "fresh one", sender=NUMBERS[1])
    late = Conversation.objects.get(contact__phone=NUMBERS[0])
    Conversation.objects.filter(pk=late.pk).update(sla_due_at=timezone.now() - timedelta(seconds=1))
    assert selectors.supervisor_figures()["sla_breached"] == 0

    assert services.conversations_flag_sla() == 1

    assert list(Conversation.objects.filter(sla_breached=True).values_list("pk", flat=True)) == [late.pk]
    figures = selectors.supervisor_figures()
    assert figures["sla_breached"] == 1
    assert figures["channels"]["sms"]["depth"] == 2
    assert selectors.inbox_counts(user=operators[0])["sla_breached"] == 1


@pytest.mark.django_db
def test_next_response_sla_starts_after_a_reply(client, operators, settings, fake_twilio,
                                                 django_capture_on_commit_callbacks):  # fmt: skip
    settings.CONVERSATION_FIRST_RESPONSE_SECONDS = 60
    settings.CONVERSATION_NEXT_RESPONSE_SECONDS = 600
    capture = django_capture_on_commit_callbacks
    customer_writes(client, capture, "first")
    conv = Conversation.objects.get()
    assert (conv.sla_due_at - conv.waiting_since).total_seconds() == 60
    services.conversation_claim(conversation_id=conv.pk, user=operators[0])
    with capture(execute=True):
        services.conversation_reply(conversation_id=conv.pk, user=operators[0], body="On it.")
    conv.refresh_from_db()
    assert conv.sla_due_at is None and conv.first_response_at is not None

    customer_writes(client, capture, "second")

    conv.refresh_from_db()
    assert (conv.sla_due_at - conv.waiting_since).total_seconds() == 600
    assert Operator.objects.count() == 0  # nobody set availability: no rows were needed


@transactional_db
def test_concurrent_auto_assignments_never_exceed_capacity(django_user_model):
    """Four conversations auto-assigned at once to the one available operator of capacity 2:
    the capacity check and the claim hold the operator's row, so two get them, two wait."""
    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL for concurrent assignments from several connections")
    olivia = django_user_model.objects.create_user(
        "olivia", "olivia@x.example", "pw", is_staff=True, is_superuser=True
    )
    services.operator_set_availability(user=olivia, available=True, capacity=2)
    conversations = [
        Conversation.objects.create(
            contact=Contact.objects.create(name=f"C{n}", phone=number),
            channel="sms",
            waiting_since=timezone.now(),
        )
        for n, number in enumerate(NUMBERS[:4])
    ]
    barrier = threading.Barrier(len(conversations))
    results: dict[int, object] = {}

    def assign(conversation_id: int) -> None:
        try:
            barrier.wait(5)
            results[conversation_id] = services.conversation_auto_assign(conversation_id=conversation_id)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=assign, args=(c.pk,)) for c in conversations]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)

    assert len(results) == 4
    assert sum(1 for user in results.values() if user is not None) == 2
    assert Conversation.objects.filter(assignee=olivia).count() == 2  # never past capacity
    assert Conversation.objects.filter(assignee__isnull=True).count() == 2
