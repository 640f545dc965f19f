"""Inbound messages of the messaging agent: keywords (STOP/START/HELP), the inbound task (the
message joins its conversation through ``interaction_recorded``), and the download of media."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from comms_platform import events
from dossiers.models import ConsentStatus, Direction, Message
from dossiers.services import (
    consent_set,
    contact_get_or_create_by_phone,
    contact_note_whatsapp_inbound,
    message_attach_task,
    message_inbound_create,
    message_media_save,
    normalize_phone,
)
from dossiers.signals import interaction_recorded_notify
from orchestrator.live import publish_inbox_update
from orchestrator.models import Task
from orchestrator.services import task_create, task_transition
from orchestrator.states import TaskStatus

log = logging.getLogger(__name__)
S = TaskStatus

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN = frozenset({"START", "UNSTOP", "YES"})
HELP = frozenset({"HELP", "INFO"})
TRAILING = " \t\r\n.!?,;:"


def keyword_of(body: str, opt_out_type: str = "") -> str:
    """'stop', 'start', 'help' or '' — the whole body must be one keyword (Twilio's rule)."""
    if opt_out_type.upper() in ("STOP", "START", "HELP"):
        return opt_out_type.lower()
    word = (body or "").strip().rstrip(TRAILING).strip().upper()
    if word in OPT_OUT:
        return "stop"
    if word in OPT_IN:
        return "start"
    if word in HELP:
        return "help"
    return ""


def inbound_receive(*, event: dict[str, str]) -> str:
    """Store an inbound message, apply keywords, create the inbound task; the dossier's signal
    joins it to the contact's conversation (the operators' inbox). Returns the reply text."""
    raw_from = event.get("From", "")
    channel = "whatsapp" if raw_from.startswith("whatsapp:") else "sms"
    phone = normalize_phone(raw_from)
    contact, _ = contact_get_or_create_by_phone(phone=phone, defaults={"name": event.get("ProfileName", "")})
    now = timezone.now()
    if channel == "whatsapp":
        contact_note_whatsapp_inbound(contact_id=contact.id, phone=phone, at=now)
    media = [
        {"url": event[f"MediaUrl{i}"], "content_type": event.get(f"MediaContentType{i}", "")}
        for i in range(int(event.get("NumMedia") or 0))
        if event.get(f"MediaUrl{i}")
    ]
    message = message_inbound_create(
        contact=contact, channel=channel, from_address=raw_from,
        to_address=event.get("To", ""), body=event.get("Body", ""), media=media,
        provider_sid=event.get("MessageSid") or None, status="received",
        segments=int(event.get("NumSegments") or 1), occurred_at=now,
    )  # fmt: skip
    keyword = keyword_of(event.get("Body", ""), event.get("OptOutType", ""))
    if keyword in ("stop", "start"):
        status = ConsentStatus.OPTED_OUT if keyword == "stop" else ConsentStatus.OPTED_IN
        consent_set(contact_id=contact.id, channel=channel, status=status, source="keyword",
                    detail=(event.get("Body") or keyword).strip()[:200], actor="webhook:twilio")  # fmt: skip
    task, _ = task_create(
        type=f"{channel}.inbound", contact_id=contact.id, source="twilio",
        payload={"message_id": message.id, "from": raw_from, "body": message.body, "keyword": keyword,
                 "media": len(media)},
    )  # fmt: skip
    message_attach_task(message_id=message.id, task_id=task.id)
    events.publish(
        "message.received", events.message_data(message) | {"task_id": str(task.id)}, task_id=task.id
    )
    interaction_recorded_notify(kind="message", object_id=message.id, contact_id=contact.id, channel=channel,
                                direction="inbound", task_id=task.id, occurred_at=now)  # fmt: skip
    # The console's inbound queue and an open conversation with this contact update at once.
    publish_inbox_update(task.id, reason="received", contact_id=contact.id)
    if media:
        transaction.on_commit(lambda: _enqueue_media_download(message.id))
    # With Advanced Opt-Out (OptOutType present) Twilio answers HELP itself.
    return settings.MESSAGING_HELP_REPLY if keyword == "help" and not event.get("OptOutType") else ""


def inbound_park(*, task: Task) -> None:
    """An inbound task waits for an operator: in progress, held by its conversation until resolved."""
    task_transition(task_id=task.id, to=S.IN_PROGRESS, actor="agent:messaging",
                    details={"queue": "inbound", "waiting_for": "operator"})  # fmt: skip


def _enqueue_media_download(message_id: int) -> None:
    from agents.messaging.tasks import download_media  # tasks import this module

    try:
        download_media.apply_async(args=[message_id], queue="messaging")
    except Exception as exc:  # Redis is away: media_pending_fetch picks it up later
        log.warning("media of message %s not queued (%s): picked up later", message_id, type(exc).__name__)


def _media_missing(media: list) -> bool:
    return any(
        isinstance(item, dict) and not item.get("artifact") and item.get("pickups", 0) < MEDIA_MAX_PICKUPS
        for item in media
    )


MEDIA_MAX_PICKUPS = 10  # a media URL that keeps failing is given up after this many rounds


def media_pending_fetch(
    *, min_age_seconds: float = 30.0, window_hours: float = 48.0, limit: int = 200
) -> int:
    """Queue the download of inbound media not fetched yet (its first request was lost, or every
    retry failed): the message row is the outbox. Returns how many messages were queued."""
    now = timezone.now()
    candidates = (
        Message.objects.filter(
            direction=Direction.INBOUND,
            occurred_at__gte=now - timedelta(hours=window_hours),
            occurred_at__lte=now - timedelta(seconds=min_age_seconds),
        )
        .exclude(media=[])
        .order_by("occurred_at")
        .values_list("id", "media")
    )
    queued = 0
    for message_id, media in candidates.iterator():
        if queued >= limit or not _media_missing(media):
            continue
        for item in media:
            if isinstance(item, dict) and not item.get("artifact"):
                item["pickups"] = item.get("pickups", 0) + 1
        message_media_save(message_id=message_id, media=media)
        _enqueue_media_download(message_id)
        queued += 1
    return queued


def media_download(*, message_id: int) -> int:
    """Fetch an inbound message's media with Twilio credentials; keep each as an artifact.

    The URL comes from a (signed) callback, but it is still a URL we did not write: it is
    fetched only from Twilio's hosts, credentials go only to Twilio's API host, Twilio's
    redirect to its storage is followed without them, and nothing private is reached
    (``comms_platform.outbound``). A refused URL is marked on the message, not retried."""
    from comms_platform import outbound
    from dossiers.services import artifact_store

    message = Message.objects.get(id=message_id)
    media = list(message.media)
    stored = 0
    for item in media:
        if item.get("artifact") or item.get("refused"):
            continue
        try:
            response, _ = outbound.fetch(
                item["url"], credential_hosts=outbound.twilio_credential_hosts(),
                redirect_hosts=outbound.twilio_redirect_hosts(),
                auth=(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN), timeout=30,
            )  # fmt: skip
        except outbound.OutboundRefused as exc:
            log.warning("messaging.media_refused", extra={"message_id": message.id, "reason": str(exc)})
            item["refused"] = str(exc)
            continue
        response.raise_for_status()
        artifact = artifact_store(
            content=response.content, content_type=response.headers.get("Content-Type", item.get("content_type", "")),
            kind="media", contact_id=message.contact_id, task_id=message.task_id,
            correlation_id=message.correlation_id, source_url=item["url"],
        )  # fmt: skip
        item["artifact"] = str(artifact.id)
        stored += 1
    message_media_save(message_id=message.id, media=media, touch=True)
    return stored
