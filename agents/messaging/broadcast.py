"""The messaging agent's side of broadcasts: batches of messages through one provider client.

Broadcasts may not import an agent; they call these registry hooks (docs/broadcasts.md):
- ``messaging.batch_prepare(channel, items)``: the channel rules per recipient (WhatsApp's
  24-hour window, the body's length) and the dossier messages of the batch, one INSERT;
- ``messaging.batch_send(channel, items, before_send, throttled)``: one provider call per
  message, ``BROADCAST_SEND_CONCURRENCY`` at a time (one SDK client per call under way),
  ``before_send(item)`` asked first (False: stop here); the first transient refusal stops the
  batch and calls ``throttled(retry_after)``; the dossier messages updated set-based afterwards;
- ``messaging.batch_reconcile(items)``: after a lost worker, asks the provider which of these
  messages (found by correlation id and address) left (Messages list), instead of sending again;
- ``messaging.template_body(template, channel, locale)``: a template's text.
Callback URLs carry ``message=<id>`` (so an early callback finds its message) and the caller's
``ref``, handed back through ``messaging.statuses_applied`` (agents/messaging/callbacks.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.utils import timezone

from agents.common.batchsend import ClientPool, send_concurrently
from agents.messaging import bodies
from agents.messaging.providers import get_provider
from agents.messaging.providers.base import MessagingProvider, OutboundMessage
from agents.messaging.sending import STATUS_PATH, WHATSAPP_WINDOW, _check_body, _sender
from dossiers.models import Contact, Message
from dossiers.services import (
    messages_discard_unsent,
    messages_outbound_bulk_create,
    messages_record_accepted_bulk,
    messages_record_refused_bulk,
)
from orchestrator.errors import AgentError, PermanentError
from orchestrator.registry import hook

log = logging.getLogger(__name__)


def callback_url(*, message_id: int, ref: str) -> str:
    query = urlencode({"message": message_id, "ref": ref})
    return f"{settings.PUBLIC_BASE_URL}{STATUS_PATH}?{query}{settings.TWILIO_STATUS_CALLBACK_OVERRIDE}"


@hook("messaging.template_body")
def template_body(*, template: str, channel: str, locale: str = "en") -> str | None:
    try:
        return bodies.find_template(name=template, channel=channel, locale=locale).body or None
    except bodies.BodyError:
        return None


@hook("messaging.batch_prepare")
def batch_prepare(*, channel: str, items: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """key → {"message_id", "sender"} for a message ready to send, {"reason"} for one that may not."""
    answers: dict[Any, dict[str, Any]] = {}
    windows = _whatsapp_windows(items) if channel == "whatsapp" else {}
    default_from, service = _sender(channel)
    rows, keys = [], []
    for item in items:
        reason = _refusal(channel, item, windows)
        if reason:
            answers[item["key"]] = {"reason": reason}
            continue
        sender = item.get("sender") or default_from or service
        to = f"whatsapp:{item['to']}" if channel == "whatsapp" else item["to"]
        rows.append({"contact_id": item.get("contact_id"), "channel": channel, "from_address": sender,
                     "to_address": to, "body": item["body"], "correlation_id": item.get("correlation_id", "")})  # fmt: skip
        keys.append((item["key"], sender))
    for (key, sender), message_id in zip(keys, messages_outbound_bulk_create(rows=rows), strict=True):
        answers[key] = {"message_id": message_id, "sender": sender}
    return answers


@hook("messaging.batch_send")
def batch_send(
    *,
    channel: str,
    items: list[dict[str, Any]],
    before_send: Callable[[dict[str, Any]], bool],
    throttled: Callable[[float | None], None] | None = None,
) -> list[dict[str, Any]]:
    """Send prepared items, ``BROADCAST_SEND_CONCURRENCY`` at a time (agents/common/batchsend.py:
    ``before_send(item)`` asked first in this thread, False stops the batch; one provider client
    per call under way); one result each: outcome accepted (sid) / refused (code, reason) /
    not_sent (stopped before its call, or a transient refusal: ``transient`` and the provider's
    ``retry_after``) / unknown (no answer after the request left: the caller leaves it for the
    reconciler). The dossier messages are updated set-based afterwards, in this thread."""
    concurrency = settings.BROADCAST_SEND_CONCURRENCY
    providers = ClientPool(_warm_provider, min(concurrency, len(items)))
    _, service = _sender(channel)

    def send(item: dict[str, Any]) -> dict[str, Any]:
        with providers.lease() as provider:
            return _send_one(provider, channel, service, item)

    results = send_concurrently(items, send=send, before_send=before_send, throttled=throttled,
                                concurrency=concurrency)  # fmt: skip
    by_key = {item["key"]: item["message_id"] for item in items}
    messages_record_accepted_bulk(
        sids={by_key[r["key"]]: r["sid"] for r in results if r["outcome"] == "accepted"}, status="queued"
    )
    messages_record_refused_bulk(
        refusals={by_key[r["key"]]: (r["code"], r["reason"]) for r in results if r["outcome"] == "refused"}
    )
    messages_discard_unsent(ids=[by_key[r["key"]] for r in results if r["outcome"] == "not_sent"])
    return results


def _warm_provider() -> MessagingProvider:
    """A provider for one sending thread at a time, its SDK client built and its Messages resource
    loaded before the first paced call (which would otherwise carry the import and reach Twilio
    late after its token)."""
    provider = get_provider()
    if hasattr(provider, "client"):
        provider.client().messages  # noqa: B018
    return provider


def _send_one(
    provider: MessagingProvider, channel: str, service: str, item: dict[str, Any]
) -> dict[str, Any]:
    """One provider call (in a sending thread: no database here)."""
    key, message_id = item["key"], item["message_id"]
    to = f"whatsapp:{item['to']}" if channel == "whatsapp" else item["to"]
    sender = item.get("sender") or ""
    outbound = OutboundMessage(
        to=to, body=item["body"], status_callback=callback_url(message_id=message_id, ref=item.get("ref", "")),
        from_="" if (service and sender == service) else sender,
        messaging_service_sid=service if (service and sender == service) else "",
    )  # fmt: skip
    try:
        sent = provider.send(outbound)
    except AgentError as error:
        code = str(error.code or "")
        if error.permanent:
            return {"key": key, "outcome": "refused", "code": code, "reason": error.message}
        if getattr(error, "maybe_sent", False):
            return {"key": key, "outcome": "unknown", "code": code, "reason": error.message}
        # A 429 or a 5xx: this one and the rest go back (sent by a later batch, after a back-off).
        return {"key": key, "outcome": "not_sent", "code": code, "reason": error.message, "transient": True,
                "retry_after": error.retry_after}  # fmt: skip
    return {"key": key, "outcome": "accepted", "sid": sent.sid}


@hook("messaging.batch_reconcile")
def batch_reconcile(*, items: list[dict[str, Any]]) -> dict[Any, str | None]:
    """key → the SID of its message at the provider, or None when no message was prepared or the
    provider has none (that message is discarded: the caller sends it again). Items: key, to,
    correlation_id, channel."""
    wanted = {(i["correlation_id"], _address(i["channel"], i["to"])): i["key"] for i in items}
    messages = Message.objects.filter(
        correlation_id__in={c for c, _ in wanted}, to_address__in={t for _, t in wanted}, direction="outbound"
    ).order_by("id")
    found: dict[Any, str | None] = dict.fromkeys(wanted.values())
    provider, missing = None, []
    for message in messages:
        key = wanted.get((message.correlation_id, message.to_address))
        if key is None or found[key]:
            continue
        sid = message.provider_sid
        if not sid and message.status == "pending":
            provider = provider or get_provider()
            sid = provider.find_recent(to=message.to_address, since=message.occurred_at - timedelta(seconds=1),
                                       body=message.body)  # fmt: skip
            if sid:
                messages_record_accepted_bulk(sids={message.id: sid}, status="queued")
            else:
                missing.append(message.id)
        found[key] = sid or None
    messages_discard_unsent(ids=missing)
    return found


def _address(channel: str, to: str) -> str:
    return f"whatsapp:{to}" if channel == "whatsapp" else to


def _whatsapp_windows(items: list[dict[str, Any]]) -> dict[Any, Any]:
    ids = {item.get("contact_id") for item in items} - {None}
    return (
        dict(Contact.objects.filter(id__in=ids).values_list("id", "last_inbound_whatsapp_at")) if ids else {}
    )


def _refusal(channel: str, item: dict[str, Any], windows: dict[Any, Any]) -> str:
    try:
        _check_body(bodies.Rendered(item["body"]), channel)
    except PermanentError as exc:
        return f"{exc.code}: {exc.message}"
    if channel == "whatsapp":
        last = windows.get(item.get("contact_id"))
        if last is None or timezone.now() - last > WHATSAPP_WINDOW:
            return "whatsapp_window_closed: outside the WhatsApp 24-hour window (send an approved template)"
    return ""
