"""One base view for every provider webhook (the django-anymail pattern).

A provider's view sets ``provider``/``kind`` and implements three hooks:
``verify`` (signature over the raw request), ``parse`` (the request → a list of event
dicts) and ``process`` (fast work for one new event). The base view refuses what fails
verification with 403, stores each event once under ``dedupe_key`` (a retried or
duplicated callback changes nothing), and answers fast: slow work goes to Celery.
"""

from __future__ import annotations

import logging
from abc import ABCMeta, abstractmethod
from typing import Any

from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    transaction,
)
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from structlog.contextvars import bind_contextvars

from agents.common import webhook_buffer
from agents.common.models import WebhookEvent
from comms_platform.db import insert_one

log = logging.getLogger(__name__)


class BadWebhook(Exception):
    """The request is signed but cannot be understood: answered with 400."""


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
JSON_TYPES = ("application/json",)


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def refuse_unreadable(request: HttpRequest, content_types: tuple[str, ...]) -> JsonResponse | None:
    """415 for a content type the provider never sends, 400 for a form body that is not UTF-8;
    None when the request can be read. Runs before anything parses the body."""
    if request.content_type not in content_types:
        return _error(415, "unsupported_media_type",
                      f"Content-Type must be {' or '.join(content_types)}, not {request.content_type or 'missing'!r}.")  # fmt: skip
    if request.content_type == "application/x-www-form-urlencoded":
        charset = request.encoding or "utf-8"  # Twilio sends UTF-8 and declares no other
        try:
            request.body.decode(charset)
        except (UnicodeDecodeError, LookupError):
            return _error(400, "bad_request", f"The form body is not {charset.upper()} form data.")
    return None


class WebhookView(View, metaclass=ABCMeta):
    provider: str = ""
    kind: str = ""
    http_method_names = ["post"]
    content_types: tuple[str, ...] = FORM_TYPES  # what the provider sends; anything else is a 415
    signature_over_raw_body = False  # True: verify before the content type and body are looked at

    @classmethod
    def as_view(cls, **initkwargs):
        # Providers sign their requests; they send no CSRF token. Exempt once, here:
        # method_decorator on dispatch would wrap it again on every request.
        return csrf_exempt(super().as_view(**initkwargs))

    # --- hooks ---------------------------------------------------------------------------
    @abstractmethod
    def verify(self, request: HttpRequest) -> bool:
        """True when the request carries a valid signature. Never open by default."""

    def parse(self, request: HttpRequest) -> list[dict[str, Any]]:
        return [request.POST.dict()]

    @abstractmethod
    def dedupe_key(self, event: dict[str, Any]) -> str:
        """The provider's id for this event (or a digest of what identifies it)."""

    @abstractmethod
    def process(self, event: dict[str, Any], record: WebhookEvent) -> str:
        """Apply one new event; return a short outcome label stored on the record."""

    def respond(self, request: HttpRequest, outcomes: list[str]) -> HttpResponse:
        return JsonResponse({"received": len(outcomes)})

    # A provider whose events may be applied a moment later sets ``process_later``: the
    # request then costs one INSERT … ON CONFLICT DO NOTHING and ``schedule`` hands the
    # stored event to a worker (which calls ``process``). High-volume callbacks use it.
    process_later: bool = False

    # ``buffered`` (with process_later): the event goes to a Redis stream instead of the table
    # (agents/common/webhook_buffer.py) and the worker stores it, in batches, where it applies
    # it; the table as before when Redis is away. For callbacks counted in thousands a second.
    buffered: bool = False

    def schedule(self, record_id: int | None) -> None:
        """Arrange for the stored event ``record_id`` (None: buffered) to be processed
        (process_later only)."""

    def reject_reason(self, event: dict[str, Any]) -> str:
        """Why this one event of a batch cannot be applied ("" when it can). A rejected event
        is stored (outcome ``rejected: …``) and the rest of the batch is applied."""
        return ""

    # --- the fixed pipeline -----------------------------------------------------------------
    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        self.args, self.kwargs = args, kwargs
        bind_contextvars(provider=self.provider, webhook_kind=self.kind)  # every line of this request
        # A signature over the raw body (SendGrid) is checked before anything reads the body;
        # Twilio signs the parsed form, so the body must be readable form data first.
        if not self.signature_over_raw_body:
            unreadable = refuse_unreadable(request, self.content_types)
            if unreadable is not None:
                on_bad_request(self.provider, self.kind)
                return unreadable
        if not self.verify(request):
            log.warning("webhook refused: %s/%s signature missing or invalid", self.provider, self.kind)
            on_refused(self.provider, self.kind)
            return JsonResponse(
                {"error": {"code": "invalid_signature", "message": "Missing or invalid signature."}},
                status=403,
            )
        if self.signature_over_raw_body:
            unreadable = refuse_unreadable(request, self.content_types)
            if unreadable is not None:
                on_bad_request(self.provider, self.kind)
                return unreadable
        try:
            events = self.parse(request)
            if any(_has_nul(event) for event in events):
                # PostgreSQL cannot store U+0000 in text or jsonb: refuse it here, not with a 500.
                raise BadWebhook("NUL characters are not allowed.")
        except BadWebhook as exc:
            on_bad_request(self.provider, self.kind)
            return JsonResponse({"error": {"code": "bad_request", "message": str(exc)}}, status=400)
        outcomes = [self._store_and_process(event) for event in events]
        on_accepted(self.provider, self.kind)
        log.info("webhook %s/%s: %s", self.provider, self.kind, ", ".join(outcomes))
        return self.respond(request, outcomes)

    def _store_and_process(self, event: dict[str, Any]) -> str:
        key = self.dedupe_key(event)[:255]
        reason = self.reject_reason(event)
        if reason:
            return self._store_rejected(event, key, reason)
        if (
            self.process_later
            and self.buffered
            and webhook_buffer.push(provider=self.provider, kind=self.kind, dedupe_key=key, payload=event)
        ):
            self.schedule(None)
            return "buffered"
        if self.process_later:
            try:
                record_id = store_once(provider=self.provider, kind=self.kind, dedupe_key=key, payload=event)
            except DataError as exc:
                return self._store_rejected(event, key, type(exc).__name__)
            if record_id is None:
                return "duplicate"
            self.schedule(record_id)
            return "stored"
        try:
            with transaction.atomic():
                record = WebhookEvent.objects.create(
                    provider=self.provider, kind=self.kind, dedupe_key=key, payload=event
                )
                outcome = self.process(event, record)
                record.processed_at = timezone.now()
                record.outcome = outcome[:64]
                record.save(update_fields=["processed_at", "outcome"])
        except IntegrityError:
            return "duplicate"
        except DatabaseError as exc:
            if isinstance(exc, OperationalError | InterfaceError):
                raise  # the database is away: a 5xx, and the provider sends it again
            # Something in this event the database refuses (DataError…): keep it, as rejected.
            return self._store_rejected(event, key, f"{type(exc).__name__}")
        return outcome

    def _store_rejected(self, event: dict[str, Any], key: str, reason: str) -> str:
        """Store an event that cannot be applied, once, with why; the rest of a batch goes on."""
        log.warning("webhook %s/%s: event rejected (%s)", self.provider, self.kind, reason)
        outcome = f"rejected: {reason}"[:64]
        try:
            with transaction.atomic():
                WebhookEvent.objects.create(provider=self.provider, kind=self.kind, dedupe_key=key,
                                            payload=_storable(event), outcome=outcome,
                                            processed_at=timezone.now())  # fmt: skip
        except IntegrityError:
            return "duplicate"
        except DataError:  # even its clean copy is refused: counted and logged, not stored
            return outcome
        return outcome


def _storable(event: dict[str, Any]) -> dict[str, Any]:
    from comms_platform.jsonsafe import storable

    return {str(k).replace("\x00", ""): storable(v) for k, v in event.items()}


def _has_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > 32:
        return False
    if isinstance(value, dict):
        return any(_has_nul(k, depth + 1) or _has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v, depth + 1) for v in value)
    return False


def store_once(*, provider: str, kind: str, dedupe_key: str, payload: dict[str, Any]) -> int | None:
    """Insert an event unless its dedupe key is known; its id, or None for a duplicate.

    One INSERT (``insert_one``: ON CONFLICT DO NOTHING, no savepoint, no exception round trip),
    which is what keeps a high-volume webhook cheap.
    """
    record = WebhookEvent(provider=provider, kind=kind, dedupe_key=dedupe_key, payload=payload)
    return record.id if insert_one(record) else None


def on_refused(provider: str, kind: str) -> None:
    """Count a refused webhook (metrics hook; a misconfigured secret shows here at once)."""
    from orchestrator import metrics

    metrics.webhook_refused(provider, kind)


def on_accepted(provider: str, kind: str) -> None:
    """Count a verified webhook whose events were stored (duplicates included: they were verified)."""
    from orchestrator import metrics

    metrics.webhook_accepted(provider, kind)


def on_bad_request(provider: str, kind: str) -> None:
    from orchestrator import metrics

    metrics.webhook_bad_request(provider, kind)
