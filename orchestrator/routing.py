"""Channel routing for ``notify`` tasks: rules, consent, quiet hours and fallback chains.

A ``notify`` task names a contact and what to say; the first matching ``RoutingRule`` gives
the channel order (e.g. whatsapp, sms, email). The orchestrator skips channels the contact
opted out of or has no address for, and opens a child task on the first channel left —
deferred to the end of the contact's quiet hours when it falls inside them. When a child
fails, or stays undelivered past the rule's timeout, the next channel gets a child; the
parent succeeds with the first delivered child, or fails listing every attempt.

A ``notify`` with ``payload.digest`` is not routed itself: it joins the contact's digest for
the key (``orchestrator.services.digests``), whose one ``notify`` task is routed here when the
window ends.
"""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework import serializers

from dossiers.models import ConsentStatus, Contact
from dossiers.services import consent_status
from orchestrator import services
from orchestrator.models import RoutingRule, Task
from orchestrator.registry import handler, payload_schema, payload_validator
from orchestrator.services import digests
from orchestrator.services.digests import MAX_WINDOW_SECONDS
from orchestrator.states import FINAL, IllegalTransition, TaskStatus

log = logging.getLogger(__name__)
S = TaskStatus
CHANNELS = ("voice", "whatsapp", "sms", "email")


def matching_rule(
    task: Task, contact: Contact | None, rules: list[RoutingRule] | None = None
) -> RoutingRule | None:
    """The first enabled rule, in order, that matches the task and contact (``rules``: read once
    by a caller that routes many contacts)."""
    tags = set(task.payload.get("tags") or [])
    locale = (contact.locale if contact else "") or ""
    if rules is None:
        rules = list(RoutingRule.objects.filter(enabled=True).order_by("position", "id"))
    for rule in rules:
        if rule.task_types and task.type not in rule.task_types:
            continue
        if not (rule.min_priority <= task.priority <= rule.max_priority):
            continue
        if rule.tags and not tags.intersection(rule.tags):
            continue
        if rule.locales and not any(locale.lower().startswith(loc.lower()) for loc in rule.locales):
            continue
        return rule
    return None


def address_for(contact: Contact, channel: str) -> str:
    if channel in ("sms", "voice"):
        return contact.phone
    if channel == "whatsapp":
        return contact.whatsapp or (f"whatsapp:{contact.phone}" if contact.phone else "")
    if channel == "email":
        return "" if contact.email_undeliverable else contact.email
    return ""


def usable_channels(contact: Contact, channels: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Channels left after consent and addresses, and why each other one was skipped."""
    usable, skipped = [], []
    for channel in channels:
        if not address_for(contact, channel):
            skipped.append({"channel": channel, "reason": "no address"})
        elif consent_status(contact_id=contact.id, channel=channel) == ConsentStatus.OPTED_OUT:
            skipped.append({"channel": channel, "reason": "opted out"})
        else:
            usable.append(channel)
    return usable, skipped


BROADCAST_CHANNELS = ("whatsapp", "sms", "email")


class _Notify:
    """What ``matching_rule`` reads of a task, for a broadcast's ``notify`` recipients."""

    type, priority = "notify", 5

    def __init__(self, tags: list[str]) -> None:
        self.payload = {"tags": tags}


def route_contacts(
    *, contact_ids: list[Any], tags: list[str] | None = None
) -> dict[Any, tuple[str, str] | str]:
    """For a batch of contacts: contact id → (channel, address) of the first channel of its
    routing rule's order it can receive on (an address, not opted out), or why none (three
    queries for the batch: rules, contacts, opt-outs). Voice is not a broadcast channel."""
    from dossiers.models import Consent

    contacts = list(Contact.objects.filter(id__in=contact_ids))
    opted_out = set(
        Consent.objects.filter(contact_id__in=contact_ids, status=ConsentStatus.OPTED_OUT).values_list(
            "contact_id", "channel"
        )
    )
    task = _Notify(list(tags or []))
    rules = list(RoutingRule.objects.filter(enabled=True).order_by("position", "id"))
    answers: dict[Any, tuple[str, str] | str] = dict.fromkeys(contact_ids, "no such contact")
    for contact in contacts:
        rule = matching_rule(task, contact, rules)  # type: ignore[arg-type]
        if rule is None:
            answers[contact.id] = "no routing rule matches"
            continue
        reasons = []
        for channel in rule.channels:
            address = address_for(contact, channel) if channel in BROADCAST_CHANNELS else ""
            if channel not in BROADCAST_CHANNELS:
                reasons.append(f"{channel}: not a broadcast channel")
            elif not address:
                reasons.append(f"{channel}: no address")
            elif (contact.id, channel) in opted_out:
                reasons.append(f"{channel}: opted out")
            else:
                answers[contact.id] = (channel, address.removeprefix("whatsapp:"))
                break
        else:
            answers[contact.id] = ("no reachable channel (" + "; ".join(reasons) + ")")[:200]
    return answers


def quiet_until(rule: RoutingRule, contact: Contact, now: datetime) -> datetime | None:
    """When the contact's quiet hours end, if ``now`` falls inside them; else None.

    Computed on the contact's wall clock with zoneinfo, so the window moves correctly across
    daylight-saving changes (a 21:00-08:00 window ends at 08:00 local time whatever the offset).
    """
    if rule.quiet_start is None or rule.quiet_end is None or rule.quiet_start == rule.quiet_end:
        return None
    try:
        zone = ZoneInfo(contact.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = now.astimezone(zone)
    start, end, clock = rule.quiet_start, rule.quiet_end, local.time()
    inside = start <= clock < end if start < end else (clock >= start or clock < end)
    if not inside:
        return None
    day = local.date() if clock < end else local.date() + timedelta(days=1)
    return _local_to_utc(day, end, zone)


def _local_to_utc(day, at: time, zone: ZoneInfo) -> datetime:
    opening = datetime.combine(day, at, tzinfo=zone)
    # A wall time that does not exist (skipped by a spring-forward change) normalises forward.
    return opening.astimezone(ZoneInfo("UTC"))


def child_payload(parent: Task, contact: Contact, channel: str) -> dict[str, Any]:
    """What the channel's agent needs, from the notify payload."""
    p = parent.payload
    body = p.get("body", "")
    if channel in ("sms", "whatsapp"):
        payload = {"to": address_for(contact, channel)}
        for key in (
            "body",
            "template",
            "variables",
            "prompt",
            "media_urls",
            "content_sid",
            "content_variables",
        ):
            if key in p:
                payload[key] = p[key]
        return payload
    if channel == "email":
        payload = {"to": contact.email, "subject": p.get("subject") or settings.ROUTING_DEFAULT_EMAIL_SUBJECT}
        payload["text"] = p.get("text") or body
        for key in ("html", "template", "artifact", "artifact_as", "reply_to"):
            if key in p:
                payload[key] = p[key]
        if "context" in p or "variables" in p:
            payload["context"] = p.get("context") or p.get("variables")
        return payload
    return {"to": contact.phone, "greeting": p.get("greeting") or body, "goal": p.get("goal") or body}


# --- The notify handler and the chain ---------------------------------------------------


@payload_validator("notify")
def validate_notify(payload: dict, contact: Contact | None) -> None:
    if contact is None:
        raise serializers.ValidationError(
            {"contact": ["A notify task needs a contact: routing picks its channels."]}
        )
    if not any(payload.get(k) for k in ("body", "text", "template", "prompt", "html")):
        raise serializers.ValidationError(
            {"payload": ["Say what to send: body, text, html, template or prompt."]}
        )
    if "tags" in payload and not (
        isinstance(payload["tags"], list) and all(isinstance(t, str) for t in payload["tags"])
    ):
        raise serializers.ValidationError({"payload": ["tags must be a list of strings."]})
    if isinstance(payload.get("digest"), dict) and not (payload.get("body") or payload.get("text")):
        raise serializers.ValidationError(
            {"payload": {"body": ["A digest item is one line of the digest: give it a body or text."]}}
        )


@handler("notify", channel="any", queue="orchestrator")
def handle_notify(task: Task) -> None:
    contact = task.contact
    if contact is None:
        _fail(task, "no_contact", "a notify task needs a contact")
        return
    if task.payload.get("digest"):
        # Collected with the contact's other items for the key; the digest's own notify task
        # is routed below when its window ends (orchestrator/services/digests.py).
        services.digest_join(task=task)
        return
    rule = matching_rule(task, contact)
    if rule is None:
        _fail(task, "no_route", "no routing rule matches this task")
        return
    channels, skipped = usable_channels(contact, list(rule.channels))
    chain = {"rule": rule.name, "channels": channels, "skipped": skipped, "attempts": []}
    services.task_transition(task_id=task.id, to=S.IN_PROGRESS, actor="orchestrator:routing", result={"chain": chain},
                             details={"rule": rule.name, "channels": channels, "skipped": skipped})  # fmt: skip
    open_next_channel(parent_id=task.id)


def open_next_channel(*, parent_id: Any) -> Task | None:
    """Open a child task on the next usable channel of the chain, or fail the parent."""
    while True:
        with transaction.atomic():
            parent = Task.objects.select_for_update(of=("self",)).select_related("contact").get(id=parent_id)
            chain = parent.result.get("chain", {})
            attempts = chain.setdefault("attempts", [])
            if parent.status in FINAL or any(a["status"] == S.SUCCEEDED for a in attempts):
                return None
            tried = {a["channel"] for a in attempts}
            remaining = [c for c in chain.get("channels", []) if c not in tried]
            if not remaining:
                services.task_transition(task_id=parent.id, to=S.FAILED, actor="orchestrator:routing",
                                         error_code="all_channels_failed", error_message=_summary(chain))  # fmt: skip
                return None
            child = _open_child(parent, chain, remaining[0])
            parent.result = {**parent.result, "chain": chain}
            parent.save(update_fields=["result", "updated_at"])
        if child is not None:
            return child
        # The channel had no enabled agent: it is recorded as failed; try the next one.


def _open_child(parent: Task, chain: dict[str, Any], channel: str) -> Task | None:
    """Create the child task for ``channel`` and record the attempt in ``chain``."""
    rule = RoutingRule.objects.filter(name=chain.get("rule")).first()
    now = timezone.now()
    deferred = quiet_until(rule, parent.contact, now) if rule else None
    child_type = settings.ROUTING_CHANNEL_TASK_TYPES[channel]
    try:
        child, _ = services.task_create(
            type=child_type,
            payload=child_payload(parent, parent.contact, channel),
            contact_id=parent.contact_id,
            correlation_id=parent.correlation_id,
            priority=parent.priority,
            scheduled_for=deferred,
            source=f"task:{parent.id}",
            idempotency_key=f"{parent.id}:{channel}",
            digest=channel,
            parent_id=parent.id,
        )
    except services.UnknownTaskType:
        chain["attempts"].append(
            {
                "channel": channel,
                "task": None,
                "status": S.FAILED,
                "reason": f"no enabled agent for {child_type}",
            }
        )
        return None
    timeout = rule.channel_timeout_seconds if rule else settings.ROUTING_CHANNEL_TIMEOUT_SECONDS
    chain["attempts"].append(
        {
            "channel": channel,
            "task": str(child.id),
            "status": child.status,
            "deadline": ((deferred or now) + timedelta(seconds=timeout)).isoformat(),
            "deferred_until": deferred.isoformat() if deferred else None,
        }
    )
    return child


def on_child_finished(*, child_id: Any) -> None:
    """A child reached a final state: succeed the parent, or try the next channel."""
    child = Task.objects.only("id", "parent_id", "status", "error_code", "error_message").get(id=child_id)
    if child.parent_id is None:
        return
    with transaction.atomic():
        parent = Task.objects.select_for_update().get(id=child.parent_id)
        if parent.status in FINAL or parent.type != "notify":
            return
        chain = parent.result.get("chain", {})
        for attempt in chain.get("attempts", []):
            if attempt["task"] == str(child.id):
                attempt["status"] = child.status
                if child.status != S.SUCCEEDED:
                    attempt["reason"] = child.error_message or child.error_code or child.status
        parent.result = {**parent.result, "chain": chain}
        parent.save(update_fields=["result", "updated_at"])
        if child.status == S.SUCCEEDED:
            services.task_transition(task_id=parent.id, to=S.SUCCEEDED, actor="orchestrator:routing",
                                     details={"delivered_by": str(child.id)})  # fmt: skip
            return
    open_next_channel(parent_id=parent.id)


def expire_overdue_children(*, now: datetime | None = None) -> int:
    """Children still undelivered past their deadline are expired (which opens the next channel)."""
    now = now or timezone.now()
    expired = 0
    parents = Task.objects.filter(type="notify", status=S.IN_PROGRESS).only("id", "result")
    for parent in parents.iterator():
        for attempt in parent.result.get("chain", {}).get("attempts", []):
            if (
                attempt["status"] in FINAL
                or not attempt.get("deadline")
                or datetime.fromisoformat(attempt["deadline"]) > now
            ):
                continue
            try:
                outcome = services.task_transition(
                    task_id=attempt["task"], to=S.EXPIRED, actor="orchestrator:routing",
                    error_code="undelivered", error_message=f"not delivered by {attempt['deadline']}",
                )  # fmt: skip
                expired += outcome.applied
            except IllegalTransition:
                pass
    return expired


def _fail(task: Task, code: str, message: str) -> None:
    services.task_fail(task_id=task.id, code=code, message=message, actor="orchestrator:routing")


def _summary(chain: dict[str, Any]) -> str:
    parts = [f"{a['channel']}: {a.get('reason') or a['status']}" for a in chain.get("attempts", [])]
    parts += [f"{s['channel']}: skipped ({s['reason']})" for s in chain.get("skipped", [])]
    return "no channel delivered — " + ("; ".join(parts) if parts else "no channel was usable")


class DigestSerializer(serializers.Serializer):
    """Collect this contact's notify tasks with the same ``key`` that arrive within
    ``window_seconds`` of the first into one message, sent when the window ends (docs/digests.md)."""

    key = serializers.CharField(max_length=100, help_text="Groups the items, per contact.")
    window_seconds = serializers.IntegerField(
        min_value=1, max_value=MAX_WINDOW_SECONDS, help_text="From the first item's arrival."
    )
    body = serializers.CharField(
        required=False, max_length=4000,
        help_text="A Django template of the message: {{ items }} (a bulleted list), {{ count }}, "
        "{% for item in items %}{{ item.body }} {{ item.variables.x }}{% endfor %}. "
        'Default: the one item\'s body, or "3 updates:" and the list.',
    )  # fmt: skip
    subject = serializers.CharField(
        required=False, max_length=400, help_text='A template too (email). Default: "3 updates".'
    )

    def validate_body(self, value: str) -> str:
        return _template(value)

    def validate_subject(self, value: str) -> str:
        return _template(value)


def _template(value: str) -> str:
    error = digests.template_check(value)
    if error:
        raise serializers.ValidationError(f"Not a valid template: {error}")
    return value


class NotifyPayloadSerializer(serializers.Serializer):
    """``notify`` (needs a ``contact``): what to say; routing rules pick the channels."""

    body = serializers.CharField(required=False, allow_blank=True)
    subject = serializers.CharField(required=False, allow_blank=True, help_text="For email.")
    text = serializers.CharField(required=False, allow_blank=True)
    html = serializers.CharField(required=False, allow_blank=True)
    template = serializers.CharField(required=False, allow_blank=True)
    prompt = serializers.CharField(required=False, allow_blank=True)
    tags = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Matched by routing rules."
    )
    digest = DigestSerializer(required=False)


payload_schema(
    "notify",
    NotifyPayloadSerializer,
    example={
        "body": "Order 1042 shipped",
        "subject": "Order 1042",
        "digest": {"key": "order-updates", "window_seconds": 600},
    },
)
