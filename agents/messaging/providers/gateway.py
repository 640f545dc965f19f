"""A second SMS provider: a generic HTTP "send SMS" gateway (the worked example of
docs/architecture.md, "Adding a provider").

Wire format: ``POST {SMS_GATEWAY_URL}/messages`` with ``Authorization: Bearer
{SMS_GATEWAY_API_KEY}`` and JSON ``{"to", "from", "text", "callback_url"}``; the answer is
``{"id", "status"}``. The gateway posts status changes as JSON ``{"id", "status", "error_code"}``
to ``callback_url``, signed with ``X-Gateway-Signature: hex(HMAC-SHA256(SMS_GATEWAY_WEBHOOK_SECRET,
body))`` (``GatewayStatusView`` below). Statuses are Twilio's words, so ``callbacks`` applies them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from agents.common.webhooks import BadWebhook, WebhookView
from agents.messaging.providers.base import MessagingProvider, OutboundMessage, SendResult
from agents.messaging.statuses import IGNORED, TASK_STATUS
from orchestrator.errors import PermanentError, TransientError

STATUS_PATH = "/webhooks/gateway/messaging/status/"


class GatewayProvider(MessagingProvider):
    name = "gateway"

    def send(self, message: OutboundMessage) -> SendResult:
        if message.content_sid or message.to.startswith("whatsapp:"):
            raise PermanentError("the SMS gateway sends plain SMS only", code="not_supported")
        task = parse_qs(urlsplit(message.status_callback).query).get("task", [""])[0]
        body = {"to": message.to, "from": message.from_ or message.messaging_service_sid, "text": message.body,
                "callback_url": f"{settings.PUBLIC_BASE_URL}{STATUS_PATH}?task={task}"}  # fmt: skip
        answer = self._request("POST", "/messages", json=body)
        return SendResult(sid=answer["id"], status=answer.get("status") or "queued")

    def find_recent(self, *, to: str, since: datetime, body: str) -> str | None:
        return None  # the gateway cannot search: a lost worker's attempt is sent again

    def fetch_status(self, sid: str) -> tuple[str, str]:
        try:
            answer = self._request("GET", f"/messages/{sid}")
        except PermanentError as exc:
            if exc.code == "gateway_404":
                return "not_found", ""
            raise
        return answer["status"], str(answer.get("error_code") or "")

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = requests.request(
                method, settings.SMS_GATEWAY_URL.rstrip("/") + path, timeout=10,
                headers={"Authorization": f"Bearer {settings.SMS_GATEWAY_API_KEY}"}, **kwargs,
            )  # fmt: skip
        except requests.RequestException as exc:
            raise TransientError(
                f"SMS gateway unreachable ({type(exc).__name__})", code="gateway_unreachable"
            ) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(
                f"SMS gateway: HTTP {response.status_code}", code=f"gateway_{response.status_code}"
            )
        if response.status_code >= 400:
            raise PermanentError(f"SMS gateway refused: HTTP {response.status_code} {response.text[:200]}",
                                 code=f"gateway_{response.status_code}")  # fmt: skip
        return response.json()


def signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class GatewayStatusView(WebhookView):
    """The gateway's signed status callbacks, applied by the messaging agent's one function."""

    provider, kind = "gateway", "messaging_status"
    signature_over_raw_body = True
    content_types = ("application/json",)

    def verify(self, request: HttpRequest) -> bool:
        secret = settings.SMS_GATEWAY_WEBHOOK_SECRET
        given = request.headers.get("X-Gateway-Signature", "")
        return bool(secret and given) and hmac.compare_digest(given, signature(request.body, secret))

    def parse(self, request: HttpRequest) -> list[dict[str, Any]]:
        try:
            data = json.loads(request.body)
            event = {"MessageSid": str(data["id"]), "MessageStatus": str(data["status"]),
                     "ErrorCode": str(data.get("error_code") or "")}  # fmt: skip
        except (ValueError, KeyError, TypeError):
            raise BadWebhook("Expected JSON {id, status, error_code}.") from None
        if event["MessageStatus"] not in TASK_STATUS and event["MessageStatus"] not in IGNORED:
            raise BadWebhook(f"unknown status {event['MessageStatus']!r}")
        return [{**event, "__task": request.GET.get("task", "")}]

    def dedupe_key(self, event: dict[str, Any]) -> str:
        return f"{event['MessageSid']}:{event['MessageStatus']}"

    def process(self, event: dict[str, Any], record) -> str:
        from agents.messaging import callbacks

        return callbacks.status_apply(event=event, task_id=event.get("__task"), actor="webhook:gateway")

    def respond(self, request: HttpRequest, outcomes: list[str]) -> HttpResponse:
        return HttpResponse(status=204)
