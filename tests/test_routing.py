"""Routing rules, consent, quiet hours (across DST) and fallback chains for notify tasks."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from dossiers.models import Contact
from dossiers.services import consent_set
from orchestrator import registry, services
from orchestrator.models import AgentRegistration, RoutingRule, Task
from orchestrator.routing import matching_rule, quiet_until, usable_channels
from orchestrator.states import TaskStatus
from tests.support.services import transactional_db

S = TaskStatus


def contact(**kw) -> Contact:
    defaults = {
        "name": "Ada",
        "phone": "+14155550101",
        "email": "ada@example.com",
        "timezone": "America/New_York",
    }
    return Contact.objects.create(**{**defaults, **kw})


# --- Rules ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_first_matching_rule_in_order_wins():
    RoutingRule.objects.all().delete()
    RoutingRule.objects.create(
        name="vip", position=1, task_types=["notify"], min_priority=8, channels=["voice"]
    )
    RoutingRule.objects.create(
        name="french", position=2, task_types=["notify"], locales=["fr"], channels=["sms"]
    )
    RoutingRule.objects.create(
        name="billing", position=3, task_types=["notify"], tags=["billing"], channels=["email"]
    )
    RoutingRule.objects.create(name="disabled", position=0, enabled=False, channels=["sms"])
    RoutingRule.objects.create(
        name="fallback", position=9, task_types=["notify"], channels=["whatsapp", "sms"]
    )
    en, fr = contact(locale="en"), contact(locale="fr-CA", phone="+14155550102", email="fr@example.com")

    def rule_for(who, **task):
        task.setdefault("priority", 5)
        return matching_rule(Task(type="notify", **task), who).name

    assert rule_for(en, priority=9) == "vip"
    assert rule_for(fr) == "french"
    assert rule_for(en, payload={"tags": ["billing"]}) == "billing"
    assert rule_for(en) == "fallback"
    assert matching_rule(Task(type="sms.send", priority=5), en) is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"channels": ["pigeon"]}, "channels"),
        ({"channels": []}, "channels"),
        ({"channels": ["sms", "sms"]}, "channels"),
        ({"channels": ["sms"], "min_priority": 7, "max_priority": 3}, "max_priority"),
        ({"channels": ["sms"], "quiet_start": time(21)}, "quiet_end"),
        ({"channels": ["sms"], "tags": "billing"}, "tags"),
    ],
)
def test_rules_are_validated_on_save(fields, error_field):
    with pytest.raises(ValidationError) as excinfo:
        RoutingRule.objects.create(name="bad", **fields)
    assert error_field in excinfo.value.message_dict


@pytest.mark.django_db
def test_consent_and_missing_addresses_skip_channels():
    who = contact(email="")
    consent_set(contact_id=who.id, channel="whatsapp", status="opted_out", source="keyword", detail="STOP")
    usable, skipped = usable_channels(who, ["whatsapp", "sms", "email"])
    assert usable == ["sms"]
    assert skipped == [
        {"channel": "whatsapp", "reason": "opted out"},
        {"channel": "email", "reason": "no address"},
    ]


# --- Quiet hours ------------------------------------------------------------------------


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tz", "now", "expected"),
    [
        # New York, the night the clocks spring forward (2026-03-08 02:00 EST → 03:00 EDT):
        # 01:30 EST is quiet; the window ends at 08:00 EDT = 12:00 UTC, not 13:00.
        ("America/New_York", utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 12, 0)),
        # The night they fall back (2026-11-01 02:00 EDT → 01:00 EST): ends at 08:00 EST = 13:00 UTC.
        ("America/New_York", utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 13, 0)),
        # 22:00 EDT the evening before: quiet until 08:00 the next morning.
        ("America/New_York", utc(2026, 7, 2, 2, 0), utc(2026, 7, 2, 12, 0)),
        # London crossing into BST (2026-03-29): 23:30 GMT → ends 08:00 BST = 07:00 UTC.
        ("Europe/London", utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 7, 0)),
        # Midday: not quiet.
        ("America/New_York", utc(2026, 7, 2, 16, 0), None),
        # 08:00 sharp local time: the window is over.
        ("America/New_York", utc(2026, 7, 2, 12, 0), None),
    ],
)
def test_quiet_hours_in_the_contacts_time_zone(tz, now, expected):
    rule = RoutingRule(name="r", channels=["sms"], quiet_start=time(21), quiet_end=time(8))
    assert quiet_until(rule, Contact(timezone=tz), now) == expected


def test_daytime_quiet_window_and_bad_time_zone():
    rule = RoutingRule(name="r", channels=["sms"], quiet_start=time(12), quiet_end=time(14))
    assert quiet_until(rule, Contact(timezone="Not/AZone"), utc(2026, 7, 2, 13, 0)) == utc(2026, 7, 2, 14, 0)
    assert quiet_until(rule, Contact(timezone="UTC"), utc(2026, 7, 2, 15, 0)) is None


# --- Fallback chains --------------------------------------------------------------------


@pytest.fixture
def channel_agents(settings):
    """Test agents behind each channel: set each one's behaviour by handler name."""
    settings.ROUTING_CHANNEL_TASK_TYPES = {c: f"test.{c}" for c in ("whatsapp", "sms", "email", "voice")}
    RoutingRule.objects.all().delete()
    RoutingRule.objects.create(name="chain", task_types=["notify"], channels=["whatsapp", "sms", "email"],
                               channel_timeout_seconds=60)  # fmt: skip

    def configure(**behaviour: str) -> None:
        for channel, name in behaviour.items():
            AgentRegistration.objects.update_or_create(
                task_type=f"test.{channel}",
                defaults={"agent": f"test-{channel}", "channel": "system", "queue": "orchestrator",
                          "handler": f"tests.support.handlers.{name}"},
            )  # fmt: skip
        registry.invalidate()

    return configure


def notify(who: Contact) -> Task:
    task, _ = services.task_create(type="notify", contact_id=who.id, payload={"body": "Your order shipped"},
                                   correlation_id="order-7")  # fmt: skip
    task.refresh_from_db()
    return task


def around_noon(monkeypatch):
    """Pin the routing clock outside quiet hours so the chain runs at once."""
    import orchestrator.routing as routing

    monkeypatch.setattr(routing.timezone, "now", lambda: utc(2026, 7, 2, 16, 0))


@transactional_db
def test_whatsapp_then_sms_then_email_ends_in_success_on_email(channel_agents, monkeypatch):
    around_noon(monkeypatch)
    channel_agents(whatsapp="fail_permanently", sms="fail_permanently", email="succeed")
    parent = notify(contact())
    assert parent.status == S.SUCCEEDED
    attempts = parent.result["chain"]["attempts"]
    assert [(a["channel"], a["status"]) for a in attempts] == [
        ("whatsapp", S.FAILED), ("sms", S.FAILED), ("email", S.SUCCEEDED)
    ]  # fmt: skip
    assert "cannot reach whatsapp:+14155550101" in attempts[0]["reason"]
    children = Task.objects.filter(parent=parent).order_by("created_at")
    assert [c.type for c in children] == ["test.whatsapp", "test.sms", "test.email"]
    assert {c.correlation_id for c in children} == {"order-7"}
    assert children[2].payload["to"] == "ada@example.com"
    assert children[2].payload["text"] == "Your order shipped"


@transactional_db
def test_chain_that_runs_out_fails_listing_every_attempt(channel_agents, monkeypatch):
    around_noon(monkeypatch)
    channel_agents(whatsapp="fail_permanently", sms="fail_permanently", email="fail_permanently")
    who = contact()
    consent_set(contact_id=who.id, channel="email", status="opted_out", source="keyword")
    parent = notify(who)
    assert parent.status == S.FAILED
    assert parent.error_code == "all_channels_failed"
    message = parent.error_message
    assert "whatsapp: test.whatsapp cannot reach" in message
    assert "sms: test.sms cannot reach" in message
    assert "email: skipped (opted out)" in message


@transactional_db
def test_undelivered_channel_falls_back_after_its_timeout(channel_agents, monkeypatch):
    around_noon(monkeypatch)
    channel_agents(whatsapp="accept_and_wait", sms="succeed")
    parent = notify(contact())
    assert parent.status == S.IN_PROGRESS
    first = Task.objects.get(parent=parent)
    assert first.status == S.IN_PROGRESS
    assert services.sweep_tasks(older_than_seconds=3600).expired == 0  # not overdue yet
    monkeypatch.setattr(timezone, "now", lambda: utc(2026, 7, 2, 16, 2))
    assert services.sweep_tasks(older_than_seconds=3600).expired == 1
    parent.refresh_from_db()
    first.refresh_from_db()
    assert first.status == S.EXPIRED and first.error_code == "undelivered"
    assert parent.status == S.SUCCEEDED
    assert [a["channel"] for a in parent.result["chain"]["attempts"]] == ["whatsapp", "sms"]


@transactional_db
def test_quiet_hours_defer_the_channel_instead_of_dropping_it(channel_agents, monkeypatch):
    import orchestrator.routing as routing

    channel_agents(whatsapp="succeed")
    RoutingRule.objects.filter(name="chain").update(quiet_start=time(21), quiet_end=time(8))
    monkeypatch.setattr(routing.timezone, "now", lambda: utc(2026, 7, 2, 3, 0))  # 23:00 in New York
    parent = notify(contact())
    child = Task.objects.get(parent=parent)
    assert (parent.status, child.status) == (S.IN_PROGRESS, S.PENDING)
    assert child.scheduled_for == utc(2026, 7, 2, 12, 0)
    assert parent.result["chain"]["attempts"][0]["deferred_until"] == "2026-07-02T12:00:00+00:00"


@pytest.mark.django_db
def test_notify_needs_a_contact_and_a_message(api):
    import json

    no_contact = api.post("/api/tasks/", data=json.dumps({"type": "notify", "payload": {"body": "hi"}}),
                          content_type="application/json")  # fmt: skip
    assert no_contact.status_code == 400
    assert "needs a contact" in no_contact.json()["error"]["fields"]["contact"][0]
    who = contact()
    empty = api.post("/api/tasks/", data=json.dumps({"type": "notify", "contact": str(who.id), "payload": {}}),
                     content_type="application/json")  # fmt: skip
    assert empty.status_code == 400
    assert "Say what to send" in empty.json()["error"]["fields"]["payload"][0]
