"""The email agent's side of broadcasts: a batch of emails over one provider connection.

The same registry hooks as the messaging agent's (agents/messaging/broadcast.py); broadcasts
may not import an agent (docs/broadcasts.md):
- ``email.batch_prepare(channel, items)``: the address rules per recipient (a contact whose
  address hard-bounced before is refused: ``email_undeliverable``) and the dossier emails of
  the batch, one INSERT;
- ``email.batch_send(channel, items, before_send, throttled)``: the configured provider's
  Django email backend opened once per call under way (SendGrid: ``BROADCAST_SEND_CONCURRENCY``
  backends, one anymail HTTP session each; SMTP: one session, one email at a time), one ``send`` per
  email over it, ``before_send(item)`` asked first; the first transient refusal stops the
  batch and calls ``throttled(retry_after)``; the dossier emails updated set-based afterwards;
- ``email.batch_reconcile(items)``: after a lost worker, the provider message id the emails
  of these recipients were accepted with, if any;
- ``email.template_problem(template)`` / ``email.render_template(template, variables, subject)``:
  an email broadcast's ``template`` (``templates/email/<name>.html``, the ``email.send`` task's
  templates) checked once at creation and rendered per recipient with its variables.
Each email carries the caller's ``ref`` as a custom arg (SendGrid ``custom_args``), so the
delivery events hand the outcome back through ``email.statuses_applied`` (agents/email/tracking.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string

from agents.common.batchsend import ClientPool, send_concurrently
from agents.content.text import html_to_text
from agents.email.handlers import _template_errors
from agents.email.providers import EmailProvider, OutgoingEmail, get_provider, provider_chain
from agents.email.services import text_template, unsubscribe_url
from dossiers.models import Contact, Email
from dossiers.services import (
    emails_discard_unsent,
    emails_outbound_bulk_create,
    emails_record_accepted_bulk,
    emails_record_refused_bulk,
)
from orchestrator.errors import AgentError
from orchestrator.registry import hook

log = logging.getLogger(__name__)
CATEGORY = "broadcast"
UNKNOWN = "email_unknown: no provider id recorded before the worker was lost (not sent again)"


@hook("email.template_problem")
def template_problem(*, template: str) -> str:
    """Why ``template`` cannot be an email broadcast's template ("" when it can): the same
    check as an ``email.send`` task's (a name under templates/email/, no path)."""
    return " ".join(_template_errors(template))


@hook("email.render_template")
def render_template(*, template: str, variables: dict[str, Any], subject: str = "") -> dict[str, str]:
    """``{"text", "html"}`` of ``templates/email/<template>.html`` (and ``.txt`` when there is
    one, else the HTML as text) for one recipient. The context is the recipient's variables,
    ``subject``, and ``contact.name`` from the ``name`` variable (the templates greet by it);
    Django's autoescaping escapes every value in the HTML part."""
    context: dict[str, Any] = {
        "contact": {"name": variables.get("name", "")},
        **variables,
        "subject": subject,
    }
    html = render_to_string(f"email/{template}.html", context)
    text = text_template(f"email/{template}.txt", context) or html_to_text(html)
    return {"text": text.strip(), "html": html}


@hook("email.batch_prepare")
def batch_prepare(*, channel: str, items: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """key → {"message_id", "sender"} for an email ready to send, {"reason"} for one that may not."""
    bounced = _undeliverable(items)
    answers: dict[Any, dict[str, Any]] = {}
    rows, keys = [], []
    sender = settings.DEFAULT_FROM_EMAIL
    for item in items:
        if (item.get("contact_id"), item["to"].lower()) in bounced:
            answers[item["key"]] = {"reason": "undeliverable: the address hard-bounced before"}
            continue
        rows.append({"contact_id": item.get("contact_id"), "correlation_id": item.get("correlation_id", ""),
                     "from_address": sender, "to_address": item["to"], "subject": item.get("subject", "")[:300],
                     "text_body": item["body"]})  # fmt: skip
        keys.append(item["key"])
    for key, email_id in zip(keys, emails_outbound_bulk_create(rows=rows), strict=True):
        answers[key] = {"message_id": email_id, "sender": sender}
    return answers


@hook("email.batch_send")
def batch_send(
    *,
    channel: str,
    items: list[dict[str, Any]],
    before_send: Callable[[dict[str, Any]], bool],
    throttled: Callable[[float | None], None] | None = None,
) -> list[dict[str, Any]]:
    """Send prepared items, ``BROADCAST_SEND_CONCURRENCY`` at a time, each call over a connection
    opened once for the batch and lent to one call at a time (one anymail HTTP session each;
    SMTP: one session); one result each: accepted (sid) / refused (code, reason) / not_sent
    (stopped, or a transient refusal — an unreachable server too: ``transient``, the rest goes
    back) / unknown (the connection broke after the message may have left)."""
    provider = get_provider(provider_chain()[0])
    concurrency = settings.BROADCAST_SEND_CONCURRENCY if provider.concurrent_sends else 1
    connections = ClientPool(lambda: _open(provider), min(concurrency, len(items)))
    messages: dict[Any, OutgoingEmail] = {}

    def send(item: dict[str, Any]) -> dict[str, Any]:
        messages[item["key"]] = message = _outgoing(item)
        with connections.lease() as connection:
            return _send_one(provider, connection, message, item["key"])

    try:
        results = send_concurrently(items, send=send, before_send=before_send, throttled=throttled,
                                    concurrency=concurrency)  # fmt: skip
    finally:
        for connection in connections.made:
            if not isinstance(connection, AgentError):
                connection.close()
    by_key = {item["key"]: item["message_id"] for item in items}
    accepted = [r for r in results if r["outcome"] == "accepted"]
    emails_record_accepted_bulk(
        provider=provider.name, message_ids={by_key[r["key"]]: r["sid"] for r in accepted}
    )
    emails_record_refused_bulk(ids=[by_key[r["key"]] for r in results if r["outcome"] == "refused"])
    emails_discard_unsent(ids=[by_key[r["key"]] for r in results if r["outcome"] == "not_sent"])
    provider.deliver_events([(messages[r["key"]], r["sid"]) for r in accepted])
    for result in accepted:
        result["sid"] = result["sid"][:64]
    return results


def _send_one(provider: EmailProvider, connection: Any, message: OutgoingEmail, key: Any) -> dict[str, Any]:
    """One email over this thread's connection (in a sending thread: no database here)."""
    try:
        if isinstance(connection, AgentError):  # this thread could not reach the provider
            raise connection
        result = provider.send_one(message, connection=connection)
    except AgentError as error:
        code = str(error.code or "")
        if error.permanent:
            return {"key": key, "outcome": "refused", "code": code, "reason": error.message}
        return {"key": key, "outcome": "not_sent", "code": code, "reason": error.message, "transient": True,
                "retry_after": error.retry_after}  # fmt: skip
    return {"key": key, "outcome": "accepted", "sid": result.message_id}


@hook("email.batch_reconcile")
def batch_reconcile(*, items: list[dict[str, Any]]) -> dict[Any, Any]:
    """key → the provider's message id of its email; None when no email was prepared (send it
    again); ``{"failed": reason}`` when an email was prepared but no id recorded: neither SMTP
    nor SendGrid's send API can be asked whether it left, so it is not sent a second time."""
    wanted = {(i["correlation_id"], i["to"].lower()): i["key"] for i in items}
    emails = Email.objects.filter(
        correlation_id__in={c for c, _ in wanted},
        to_address__in={i["to"] for i in items},
        direction="outbound",
    ).order_by("id")
    found: dict[Any, Any] = dict.fromkeys(wanted.values())
    for email in emails:
        key = wanted.get((email.correlation_id, email.to_address.lower()))
        if key is None or (found[key] and not isinstance(found[key], dict)):
            continue
        found[key] = email.provider_message_id[:64] if email.provider_message_id else {"failed": UNKNOWN}
    return found


def _open(provider: EmailProvider) -> Any:
    """A connection of the provider's Django email backend, opened for the batch (Django's and
    anymail's backends keep a connection opened by their caller across ``send_messages``; one
    they open themselves is closed after each message). The typed error, instead, when the
    provider cannot be reached."""
    connection = provider.connection()
    try:
        connection.open()
    except Exception as exc:
        error = provider.error_for(exc)
        if error is None:
            raise
        return error
    return connection


def _outgoing(item: dict[str, Any]) -> OutgoingEmail:
    return OutgoingEmail(
        task_id="", email_id=item["message_id"], from_email=item.get("sender") or settings.DEFAULT_FROM_EMAIL,
        to=item["to"], subject=item.get("subject", ""), text=item["body"], html=item.get("html", ""),
        list_unsubscribe=f"<{unsubscribe_url(email_id=item['message_id'])}>", categories=(CATEGORY,),
        ref=item.get("ref", ""),
    )  # fmt: skip


def _undeliverable(items: list[dict[str, Any]]) -> set[tuple[Any, str]]:
    """(contact id, address) of the batch's contacts whose address hard-bounced before."""
    ids = {item.get("contact_id") for item in items} - {None}
    if not ids:
        return set()
    rows = Contact.objects.filter(id__in=ids, email_undeliverable=True).values_list("id", "email")
    return {(cid, (email or "").lower()) for cid, email in rows}
