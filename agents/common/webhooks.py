"""One base view for every provider webhook (the django-anymail pattern).

A provider's view sets ``provider``/``kind`` and implements three hooks:
``verify`` (signature over the raw request), ``parse`` (the request → a list of event
dicts) and ``process`` (fast work for one new event). The base view refuses what fails
verification with 403, stores each event once under ``dedupe_key`` (a retried or
duplicated callback changes nothing), and answers fast: slow work goes to Celery.
"""

from __future__ import annotations

import json
import logging
from abc import ABCMeta, abstractmethod
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from structlog.contextvars import bind_contextvars

from agents.common.models import WebhookEvent
from comms_platform.pgbackend.base import execute_prepared

log = logging.getLogger(__name__)


class BadWebhook(Exception):
    """The request is signed but cannot be understood: answered with 400."""


class WebhookView(View, metaclass=ABCMeta):
    provider: str = ""
    kind: str = ""
    http_method_names = ["post"]

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

    def schedule(self, record_id: int) -> None:
        """Arrange for the stored event ``record_id`` to be processed (process_later only)."""

    # --- the fixed pipeline -----------------------------------------------------------------
    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        self.args, self.kwargs = args, kwargs
        bind_contextvars(provider=self.provider, webhook_kind=self.kind)  # every line of this request
        if not self.verify(request):
            log.warning("webhook refused: %s/%s signature missing or invalid", self.provider, self.kind)
            on_refused(self.provider, self.kind)
            return JsonResponse(
                {"error": {"code": "invalid_signature", "message": "Missing or invalid signature."}},
                status=403,
            )
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
        if self.process_later:
            record_id = store_once(provider=self.provider, kind=self.kind, dedupe_key=key, payload=event)
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
        return outcome


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

    One statement (no savepoint, no exception round trip), prepared once per connection,
    which is what keeps a high-volume webhook cheap.
    """
    table = WebhookEvent._meta.db_table
    rows = execute_prepared(
        connection,
        f"INSERT INTO {table} (provider, kind, dedupe_key, payload, received_at, outcome) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s, '') ON CONFLICT (provider, dedupe_key) DO NOTHING RETURNING id",
        [provider, kind, dedupe_key, json.dumps(payload), timezone.now()],
    )
    return rows[0][0] if rows else None


def on_refused(provider: str, kind: str) -> None:
    """Count a refused webhook (metrics hook; a misconfigured secret shows here at once)."""
    from agents.common import metrics

    metrics.webhook_refused(provider, kind)


def on_accepted(provider: str, kind: str) -> None:
    """Count a verified webhook whose events were stored (duplicates included: they were verified)."""
    from agents.common import metrics

    metrics.webhook_accepted(provider, kind)


def on_bad_request(provider: str, kind: str) -> None:
    from agents.common import metrics

    metrics.webhook_bad_request(provider, kind)
