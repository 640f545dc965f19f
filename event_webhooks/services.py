"""Outbound event webhooks: endpoints, the outbox (deliveries) and one delivery attempt.

Signed per Standard Webhooks with the ``standardwebhooks`` library; sent by Celery on the
``webhooks`` queue (event_webhooks/tasks.py); every request goes through
``comms_platform.outbound`` (private, loopback and link-local addresses refused in production).
"""

from __future__ import annotations

import email.utils
import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from comms_platform import outbound
from comms_platform.events import EVENT_TYPES, Event
from event_webhooks import secrets
from event_webhooks.models import (
    CallbackSecret,
    DeliveryStatus,
    EndpointEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from orchestrator.models import Task

log = structlog.get_logger(__name__)

RESPONSE_BODY_KEPT = 2000
MAX_RETRY_AFTER_SECONDS = 24 * 3600


class InvalidEndpoint(ValueError):
    """Bad input for an endpoint; ``code`` names the problem, the message is safe to show."""

    def __init__(self, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code, self.field = code, field


# --- Endpoints ------------------------------------------------------------------------------


def _check_event_types(event_types: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys(event_types))
    if not wanted:
        raise InvalidEndpoint("invalid_event_types", "Name at least one event type.", "event_types")
    unknown = [t for t in wanted if t not in EVENT_TYPES]
    if unknown:
        raise InvalidEndpoint(
            "unknown_event_type",
            f"Unknown event type(s): {', '.join(unknown)}. Known: {', '.join(EVENT_TYPES)}.",
            "event_types",
        )
    return wanted


def check_url(url: str) -> None:
    """Raise InvalidEndpoint when the platform may not send to ``url`` (SSRF rules)."""
    try:
        outbound.check_url(url)
    except outbound.OutboundRefused as exc:
        raise InvalidEndpoint("url_refused", f"This URL is refused: {exc}.", "url") from None


def endpoint_create(
    *, url: str, event_types: Sequence[str], description: str = "", owner: str = "",
    all_events: bool = False, actor: str = "",
) -> tuple[WebhookEndpoint, str]:  # fmt: skip
    """Create an endpoint; returns it with its signing secret (shown once, stored encrypted)."""
    check_url(url)
    secret = secrets.generate()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            url=url, event_types=_check_event_types(event_types), description=description[:200],
            secret_encrypted=secrets.encrypt(secret), owner=owner, all_events=all_events,
        )  # fmt: skip
        EndpointEvent.objects.create(endpoint=endpoint, kind="created", actor=actor[:150])
    return endpoint, secret


def endpoint_update(
    *, endpoint: WebhookEndpoint, actor: str, url: str | None = None,
    event_types: Sequence[str] | None = None, description: str | None = None, enabled: bool | None = None,
) -> WebhookEndpoint:  # fmt: skip
    fields = ["updated_at"]
    if url is not None and url != endpoint.url:
        check_url(url)
        endpoint.url = url
        fields.append("url")
    if event_types is not None:
        endpoint.event_types = _check_event_types(event_types)
        fields.append("event_types")
    if description is not None:
        endpoint.description = description[:200]
        fields.append("description")
    with transaction.atomic():
        endpoint.save(update_fields=fields)
        if enabled is not None and enabled != endpoint.enabled:
            endpoint_set_enabled(endpoint=endpoint, enabled=enabled, actor=actor)
    return endpoint


def endpoint_set_enabled(*, endpoint: WebhookEndpoint, enabled: bool, actor: str, reason: str = "") -> None:
    """Enable or disable; enabling clears the failure clock. Disabling stops pending deliveries."""
    now = timezone.now()
    with transaction.atomic():
        transaction.on_commit(endpoint_cache.clear)
        endpoint_cache.clear()
        WebhookEndpoint.objects.filter(id=endpoint.id).update(
            enabled=enabled,
            disabled_reason="" if enabled else reason[:200],
            failing_since=None,
            updated_at=now,
        )
        endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since = (
            enabled,
            "" if enabled else reason,
            None,
        )
        EndpointEvent.objects.create(
            endpoint=endpoint,
            kind="enabled" if enabled else "disabled",
            detail=reason[:300],
            actor=actor[:150],
        )
        if not enabled:
            WebhookDelivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.PENDING).update(
                status=DeliveryStatus.FAILED, last_error="the endpoint was disabled", next_attempt_at=None
            )


def endpoint_rotate_secret(
    *, endpoint: WebhookEndpoint, actor: str, overlap_seconds: int | None = None
) -> str:
    """A new secret; the current one keeps signing too (both signatures sent) for the overlap."""
    overlap = settings.WEBHOOK_SECRET_OVERLAP_SECONDS if overlap_seconds is None else overlap_seconds
    secret = secrets.generate()
    with transaction.atomic():
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted if overlap > 0 else ""
        endpoint.previous_secret_expires_at = (
            timezone.now() + timedelta(seconds=overlap) if overlap > 0 else None
        )
        endpoint.secret_encrypted = secrets.encrypt(secret)
        endpoint.save(update_fields=["secret_encrypted", "previous_secret_encrypted",
                                     "previous_secret_expires_at", "updated_at"])  # fmt: skip
        EndpointEvent.objects.create(endpoint=endpoint, kind="secret_rotated", actor=actor[:150],
                                     detail=f"the previous secret signs too for {overlap} s")  # fmt: skip
    return secret


def signing_secrets(endpoint: WebhookEndpoint, now: datetime | None = None) -> list[str]:
    return _signing_keys(endpoint, now or timezone.now())


# --- Callback secrets (a task's one-off callback_url) ------------------------------------------


def callback_secret_rotate(*, owner: str, actor: str = "", overlap_seconds: int | None = None) -> str:
    """Make (or replace) an API key's callback secret; returns it (shown once). The previous
    one keeps signing too for the overlap, like an endpoint's."""
    overlap = settings.WEBHOOK_SECRET_OVERLAP_SECONDS if overlap_seconds is None else overlap_seconds
    secret = secrets.generate()
    with transaction.atomic():
        row = CallbackSecret.objects.select_for_update().filter(owner=owner).first()
        if row is None:
            CallbackSecret.objects.create(owner=owner, secret_encrypted=secrets.encrypt(secret))
        else:
            row.previous_secret_encrypted = row.secret_encrypted if overlap > 0 else ""
            row.previous_secret_expires_at = (
                timezone.now() + timedelta(seconds=overlap) if overlap > 0 else None
            )
            row.secret_encrypted = secrets.encrypt(secret)
            row.save(update_fields=["secret_encrypted", "previous_secret_encrypted", "previous_secret_expires_at",
                                    "updated_at"])  # fmt: skip
    log.info("webhook.callback_secret_rotated", owner=owner, actor=actor, overlap_seconds=overlap)
    return secret


def callback_secret_previous_expires_at(owner: str) -> datetime | None:
    return (
        CallbackSecret.objects.filter(owner=owner)
        .values_list("previous_secret_expires_at", flat=True)
        .first()
    )


def callback_secret_for_new_key(api_key: Any) -> dict[str, str]:
    """The orchestrator's key-created hook: every new client key gets its callback secret."""
    if getattr(api_key, "role", "client") != "client":
        return {}
    return {"callback signing secret": callback_secret_rotate(owner=f"key:{api_key.pk}", actor="create")}


def _signing_keys(row: Any, now: datetime) -> list[str]:
    keys = [secrets.decrypt(row.secret_encrypted)]
    if (
        row.previous_secret_encrypted
        and row.previous_secret_expires_at
        and row.previous_secret_expires_at > now
    ):
        keys.append(secrets.decrypt(row.previous_secret_encrypted))
    return keys


# --- The outbox -----------------------------------------------------------------------------


def envelope(event: Event) -> dict[str, Any]:
    """The body every receiver gets (Standard Webhooks' recommended shape)."""
    return {"type": event.type, "timestamp": event.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": event.data}  # fmt: skip


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Subscriber:
    id: Any
    url: str
    event_types: frozenset[str]
    owner: str
    all_events: bool


class EndpointCache:
    """The enabled endpoints, per process, for WEBHOOK_ENDPOINT_CACHE_SECONDS: the bus costs no
    query per event on the hot paths (a status callback batch). Any change to an endpoint in
    this process clears it (signals below); other processes see it within the cache time."""

    def __init__(self) -> None:
        self._until = 0.0
        self._items: list[Subscriber] = []
        # Whether any task has a callback_url (the partial index task_callback_idx answers it):
        # until one does, the bus looks up no task for a callback. Once true it stays true.
        self._callbacks = False

    def get(self) -> list[Subscriber]:
        now = time.monotonic()
        if now >= self._until:
            self._items = [
                Subscriber(ep.id, ep.url, frozenset(ep.event_types), ep.owner, ep.all_events)
                for ep in WebhookEndpoint.objects.filter(enabled=True).only("id", "url", "event_types", "owner",
                                                                             "all_events")
            ]  # fmt: skip
            if not self._callbacks:
                self._callbacks = Task.objects.exclude(callback_url="").exists()
            self._until = now + settings.WEBHOOK_ENDPOINT_CACHE_SECONDS
        return self._items

    def callbacks(self) -> bool:
        self.get()
        return self._callbacks

    def saw_callback(self) -> None:
        self._callbacks = True

    def clear(self, **kwargs) -> None:
        self._until = 0.0

    def prime(self, subscribers: list[Subscriber], callbacks: bool = False) -> None:
        """Set the list (tests: a fresh database has no endpoints and no callback tasks)."""
        self._items = list(subscribers)
        self._callbacks = callbacks
        self._until = time.monotonic() + settings.WEBHOOK_ENDPOINT_CACHE_SECONDS


endpoint_cache = EndpointCache()
post_save.connect(endpoint_cache.clear, sender=WebhookEndpoint, dispatch_uid="webhook-endpoint-cache-save")
post_delete.connect(
    endpoint_cache.clear, sender=WebhookEndpoint, dispatch_uid="webhook-endpoint-cache-delete"
)


def events_enqueue(events: Sequence[Event]) -> list[WebhookDelivery]:
    """The bus sink: one delivery per (event, subscribed endpoint), written in
    the publisher's transaction; the Celery messages are sent after it commits."""
    wanted = {e.type for e in events}
    endpoints = [ep for ep in endpoint_cache.get() if wanted & ep.event_types]
    # A task's one-off callback URL: task.* events carry it; the others (a message, a call, an
    # email of a task) are looked up with the task's owner in the same one query.
    if any(e.callback_url for e in events):
        endpoint_cache.saw_callback()
    lookup = set()
    if endpoint_cache.callbacks():
        lookup = {e.task_id for e in events if e.task_id and e.callback_url is None}
    need_owner = {e.task_id for e in events if e.task_id and not e.source}
    if endpoints and any(not ep.all_events for ep in endpoints):
        lookup |= need_owner
    tasks: dict[str, tuple[str, str]] = {}
    if lookup:
        tasks = {str(i): (src, cb) for i, src, cb in
                 Task.objects.filter(id__in=lookup).values_list("id", "source", "callback_url")}  # fmt: skip
    rows: list[WebhookDelivery] = []
    for event in events:
        body = envelope(event)
        source = event.source or tasks.get(event.task_id, ("", ""))[0]
        callback = (
            event.callback_url if event.callback_url is not None else tasks.get(event.task_id, ("", ""))[1]
        )
        if callback and event.task_id:
            owner = source or tasks.get(event.task_id, ("", ""))[0]
            rows.append(WebhookDelivery(webhook_id=new_webhook_id(), endpoint_id=None, url=callback,
                                        callback_owner=owner, event_type=event.type, payload=body))  # fmt: skip
        for ep in endpoints:
            if event.type in ep.event_types and (ep.all_events or (source and source == ep.owner)):
                rows.append(WebhookDelivery(webhook_id=new_webhook_id(), endpoint_id=ep.id, url=ep.url,
                                            event_type=event.type, payload=body))  # fmt: skip
    if not rows:
        return []
    WebhookDelivery.objects.bulk_create(rows)
    ids = [row.id for row in rows]
    transaction.on_commit(lambda: enqueue(ids))
    return rows


def enqueue(
    delivery_ids: Sequence[int], *, attempts: dict[int, int] | None = None, countdown: float = 0
) -> None:
    from event_webhooks.tasks import deliver

    for delivery_id in delivery_ids:
        deliver.apply_async(args=[delivery_id, (attempts or {}).get(delivery_id, 0)], countdown=countdown or None,
                            queue=settings.WEBHOOK_QUEUE)  # fmt: skip


def delivery_resend(*, delivery: WebhookDelivery, actor: str) -> None:
    """Send it again (same webhook-id, so a receiver that got it already can drop it)."""
    WebhookDelivery.objects.filter(id=delivery.id).update(
        status=DeliveryStatus.PENDING, next_attempt_at=timezone.now(), locked_until=None
    )
    log.info("webhook.resend", delivery_id=delivery.id, webhook_id=delivery.webhook_id, actor=actor)
    attempts = WebhookDelivery.objects.values_list("attempts", flat=True).get(id=delivery.id)
    transaction.on_commit(lambda: enqueue([delivery.id], attempts={delivery.id: attempts}))


def sweep_due(*, grace_seconds: float | None = None, batch: int = 500) -> int:
    """Re-send the Celery message of deliveries overdue by more than the grace period (a lost
    message, a retry too far ahead to keep as a countdown). Returns how many."""
    grace = settings.WEBHOOK_SWEEP_GRACE_SECONDS if grace_seconds is None else grace_seconds
    now = timezone.now()
    due = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now - timedelta(seconds=grace))
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .values_list("id", "attempts")[:batch]
    )  # fmt: skip
    enqueue([d for d, _ in due], attempts=dict(due))
    return len(due)


# --- One attempt ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: str  # delivered, retry, failed, skipped
    retry_in: float | None = None  # seconds, for "retry"; None when the sweep will pick it up
    attempt: int = 0


def retry_delay(attempt: int, retry_after: float | None = None) -> float | None:
    """Seconds before attempt ``attempt + 1`` (``attempt`` made so far), or None when the
    schedule is exhausted. ``Retry-After`` wins when it asks for longer. Jitter ±fraction."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if attempt > len(schedule):
        return None
    base = float(schedule[attempt - 1])
    jitter = settings.WEBHOOK_RETRY_JITTER
    delay = base * (1 + random.uniform(-jitter, jitter)) if jitter else base
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - timezone.now()).total_seconds())


def _claim(delivery_id: int, now: datetime) -> WebhookDelivery | None:
    lease = settings.WEBHOOK_TIMEOUT_SECONDS + settings.WEBHOOK_LEASE_MARGIN_SECONDS
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(id=delivery_id, status=DeliveryStatus.PENDING)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
            .select_related("endpoint")
            .first()
        )
        if delivery is None:
            return None
        delivery.attempts += 1
        delivery.locked_until = now + timedelta(seconds=lease)
        delivery.save(update_fields=["attempts", "locked_until"])
    return delivery


def sign_headers(delivery: WebhookDelivery, body: str, keys: Sequence[str], at: datetime) -> dict[str, str]:
    signatures = " ".join(Webhook(key).sign(delivery.webhook_id, at, body) for key in keys)
    return {
        "content-type": "application/json",
        "user-agent": "comms-platform-webhooks/1",
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


def delivery_attempt(*, delivery_id: int, expected_attempts: int = 0) -> Outcome:
    """Make the next attempt of a delivery, if it is due and nobody else is making it."""
    now = timezone.now()
    delivery = _claim(delivery_id, now)
    if delivery is None:
        row = WebhookDelivery.objects.filter(id=delivery_id).values("status", "attempts", "locked_until",
                                                                    "next_attempt_at").first()  # fmt: skip
        if row and row["status"] == DeliveryStatus.PENDING:
            # This task's own attempt was lost (its worker died mid-request): try again when its
            # lease ends. Any other duplicate message simply stops here.
            wait_until = max(t for t in (row["locked_until"], row["next_attempt_at"], now) if t)
            if row["attempts"] == expected_attempts + 1 or row["attempts"] == expected_attempts:
                return Outcome("retry", (wait_until - now).total_seconds() + 0.2, expected_attempts)
        return Outcome("skipped")
    endpoint = delivery.endpoint
    at = timezone.now()
    if delivery.callback_owner and delivery.endpoint_id is None:
        row = CallbackSecret.objects.filter(owner=delivery.callback_owner).first()
        if row is None:
            _finish(delivery, DeliveryStatus.FAILED, error="the API key has no callback secret "
                                                           "(POST /api/callback-secret/rotate/)")  # fmt: skip
            return Outcome("failed", attempt=delivery.attempts)
        keys = _signing_keys(row, at)
    elif endpoint is None or not endpoint.enabled:
        _finish(delivery, DeliveryStatus.FAILED, error="the endpoint is disabled")
        return Outcome("failed", attempt=delivery.attempts)
    else:
        keys = signing_secrets(endpoint, at)
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
    headers = sign_headers(delivery, body, keys, at)
    status_code, error, response_text, retry_after = None, "", "", None
    started = time.monotonic()
    try:
        response = outbound.post(delivery.url, data=body.encode(), headers=headers,
                                 timeout=settings.WEBHOOK_TIMEOUT_SECONDS)  # fmt: skip
        status_code, response_text = response.status_code, response.text[:RESPONSE_BODY_KEPT]
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except outbound.OutboundRefused as exc:
        error = f"refused: {exc}"[:300]
    except requests.Timeout:
        error = f"timed out after {settings.WEBHOOK_TIMEOUT_SECONDS} s"
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}"[:300]
    duration_ms = int((time.monotonic() - started) * 1000)
    shown = {k: v for k, v in headers.items() if k != "webhook-signature"} | {"webhook-signature": "v1,…"}
    WebhookAttempt.objects.create(delivery=delivery, request_headers=shown, status_code=status_code,
                                  duration_ms=duration_ms, response_body=response_text, error=error)  # fmt: skip
    if status_code is not None and 200 <= status_code < 300:
        _finish(delivery, DeliveryStatus.DELIVERED, status_code=status_code)
        if endpoint is not None and endpoint.failing_since is not None:
            WebhookEndpoint.objects.filter(id=endpoint.id).update(failing_since=None)
        return Outcome("delivered", attempt=delivery.attempts)
    retryable = (
        (status_code is None and not error.startswith("refused"))
        or status_code in (408, 429)
        or (status_code is not None and status_code >= 500)
    )
    if not error and status_code is not None and status_code < 500 and status_code not in (408, 429):
        error = f"HTTP {status_code}: not retried"
    elif not error:
        error = f"HTTP {status_code}"
    if endpoint is not None and _failing_too_long(endpoint, at):
        endpoint_set_enabled(endpoint=endpoint, enabled=False, actor="webhooks",
                             reason=f"failing for more than {settings.WEBHOOK_DISABLE_AFTER_SECONDS} s")  # fmt: skip
        log.warning("webhook.endpoint_disabled", endpoint_id=str(endpoint.id))
        _finish(delivery, DeliveryStatus.FAILED, status_code=status_code, error="the endpoint was disabled")
        return Outcome("failed", attempt=delivery.attempts)
    delay = retry_delay(delivery.attempts, retry_after) if retryable else None
    if delay is None:
        _finish(delivery, DeliveryStatus.FAILED, status_code=status_code,
                error=error if not retryable else f"{error}; retries exhausted")  # fmt: skip
        return Outcome("failed", attempt=delivery.attempts)
    WebhookDelivery.objects.filter(id=delivery.id).update(
        next_attempt_at=at + timedelta(seconds=delay), locked_until=None, last_status_code=status_code,
        last_error=error[:300],
    )  # fmt: skip
    return Outcome("retry", delay, delivery.attempts)


def _failing_too_long(endpoint: WebhookEndpoint, now: datetime) -> bool:
    """Start the endpoint's failure clock (first failure), or say it has run past the limit."""
    started = WebhookEndpoint.objects.filter(id=endpoint.id, failing_since__isnull=True).update(
        failing_since=now
    )
    if started:
        endpoint.failing_since = now
        return False
    since = WebhookEndpoint.objects.values_list("failing_since", flat=True).get(id=endpoint.id)
    return since is not None and (now - since).total_seconds() > settings.WEBHOOK_DISABLE_AFTER_SECONDS


def _finish(
    delivery: WebhookDelivery, status: str, *, status_code: int | None = None, error: str = ""
) -> None:
    WebhookDelivery.objects.filter(id=delivery.id).update(
        status=status, locked_until=None, next_attempt_at=None, last_status_code=status_code,
        last_error=error[:300], delivered_at=timezone.now() if status == DeliveryStatus.DELIVERED else None,
    )  # fmt: skip
