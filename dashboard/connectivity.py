"""Connectivity checks for the operations page and ``manage.py check_connectivity``.

In test mode the providers are the built-in simulators, so their checks say "simulated"
and reach nothing. In production each check makes one cheap, harmless request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection

TIMEOUT = 5.0
WHATSAPP_SANDBOX_SENDER = "whatsapp:+14155238886"
WHATSAPP_SANDBOX_JOIN = (
    "Twilio WhatsApp sandbox: each recipient first sends 'join <your sandbox keyword>' from WhatsApp "
    "to +1 415 523 8886 (the keyword is in Twilio Console → Messaging → Try it out → Send a WhatsApp message); "
    "the sandbox session lasts 72 hours."
)
# Twilio's magic numbers for test credentials: +15005550006 is a valid sender; any ordinary
# number is a valid recipient (https://www.twilio.com/docs/iam/test-credentials).
MAGIC_FROM = "+15005550006"
MAGIC_TO = "+14108675310"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # ok | simulated | sandbox | skipped | error
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "error"


def check_database() -> CheckResult:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return CheckResult("database", "ok", f"{connection.vendor} reachable")
    except Exception as exc:
        return CheckResult("database", "error", type(exc).__name__)


def check_redis() -> CheckResult:
    if not settings.REDIS_URL:
        return CheckResult("redis", "skipped", "REDIS_URL not set: in-process tasks, in-memory channel layer")
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=TIMEOUT).ping()
        host = urlsplit(settings.REDIS_URL).hostname
        return CheckResult("redis", "ok", f"PING answered by {host}")
    except Exception as exc:
        return CheckResult("redis", "error", type(exc).__name__)


def _twilio_client():
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    base = settings.TWILIO_API_BASE_URL.rstrip("/")

    class Rewriting(TwilioHttpClient):
        """Send the SDK's real requests to TWILIO_API_BASE_URL (a local fake in tests)."""

        def request(self, method, url, *args, **kwargs):
            if base:
                parts = urlsplit(url)
                url = f"{base}{parts.path}" + (f"?{parts.query}" if parts.query else "")
            return super().request(method, url, *args, **kwargs)

    return Client(
        settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=Rewriting(timeout=TIMEOUT)
    )


def check_twilio() -> CheckResult:
    if settings.TEST_MODE:
        return CheckResult("twilio", "simulated", "test mode: the built-in Twilio simulator, nothing is sent")
    if not settings.TWILIO_ACCOUNT_SID or not settings.TWILIO_AUTH_TOKEN:
        return CheckResult("twilio", "error", "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN not set")
    from twilio.base.exceptions import TwilioRestException

    client = _twilio_client()
    try:
        account = client.api.v2010.accounts(settings.TWILIO_ACCOUNT_SID).fetch()
        return CheckResult("twilio", "ok", f"account {account.friendly_name!r} ({account.status})")
    except TwilioRestException as exc:
        if exc.status != 403:
            return CheckResult("twilio", "error", f"HTTP {exc.status}, Twilio error {exc.code}")
    except Exception as exc:
        return CheckResult("twilio", "error", type(exc).__name__)
    # Test credentials may only create Messages, Calls and IncomingPhoneNumbers: every other
    # resource answers 403. Prove them with a message between magic numbers (never delivered).
    try:
        msg = client.messages.create(from_=MAGIC_FROM, to=MAGIC_TO, body="connectivity check")
    except TwilioRestException as exc:
        return CheckResult("twilio", "error", f"HTTP {exc.status}, Twilio error {exc.code}")
    except Exception as exc:
        return CheckResult("twilio", "error", type(exc).__name__)
    return CheckResult(
        "twilio",
        "sandbox",
        f"test credentials (sandbox): a message {MAGIC_FROM} → {MAGIC_TO} was accepted ({msg.status}), "
        "nothing is delivered or charged",
    )


def check_whatsapp_sender() -> CheckResult:
    sender = settings.TWILIO_WHATSAPP_FROM
    if not sender:
        return CheckResult("whatsapp sender", "skipped", "TWILIO_WHATSAPP_FROM not set")
    if sender.replace(" ", "") == WHATSAPP_SANDBOX_SENDER:
        return CheckResult("whatsapp sender", "sandbox", WHATSAPP_SANDBOX_JOIN)
    return CheckResult("whatsapp sender", "ok", f"{sender} (an approved WhatsApp sender)")


def check_email() -> CheckResult:
    if settings.TEST_MODE:
        return CheckResult("email", "simulated", "test mode: the built-in SendGrid simulator")
    if settings.EMAIL_PROVIDER == "smtp":
        from django.core.mail import get_connection

        try:
            conn = get_connection(timeout=TIMEOUT)
            conn.open()
            conn.close()
            return CheckResult(
                "email (smtp)", "ok", f"SMTP {settings.EMAIL_HOST}:{settings.EMAIL_PORT} accepted a login"
            )
        except Exception as exc:
            return CheckResult("email (smtp)", "error", type(exc).__name__)
    import requests

    base = (settings.SENDGRID_API_BASE_URL or "https://api.sendgrid.com").rstrip("/")
    try:
        response = requests.get(
            f"{base}/v3/scopes",
            headers={"Authorization": f"Bearer {settings.SENDGRID_API_KEY}"},
            timeout=TIMEOUT,
        )
    except Exception as exc:
        return CheckResult("email (sendgrid)", "error", type(exc).__name__)
    if response.status_code == 200:
        has_send = "mail.send" in response.json().get("scopes", [])
        detail = "API key valid" + ("" if has_send else ", but it lacks the mail.send scope")
        return CheckResult("email (sendgrid)", "ok" if has_send else "error", detail)
    return CheckResult("email (sendgrid)", "error", f"HTTP {response.status_code}")


def check_openai() -> CheckResult:
    if settings.TEST_MODE:
        return CheckResult("openai", "simulated", "test mode: the deterministic content generator")
    from openai import OpenAI

    try:
        client = OpenAI(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL or None,
            timeout=TIMEOUT,
            max_retries=0,
        )
        models = [m.id for m in client.models.list()]
    except Exception as exc:
        return CheckResult("openai", "error", type(exc).__name__)
    found = settings.OPENAI_MODEL in models
    return CheckResult(
        "openai",
        "ok" if found else "error",
        f"{len(models)} models; {settings.OPENAI_MODEL} {'found' if found else 'missing'}",
    )


CHECKS: list[Callable[[], CheckResult]] = [
    check_database,
    check_redis,
    check_twilio,
    check_whatsapp_sender,
    check_email,
    check_openai,
]


def run_checks() -> list[CheckResult]:
    return [check() for check in CHECKS]


def queue_depths(queues: set[str]) -> dict[str, int | None]:
    """Messages waiting per Celery queue (the Redis transport keeps each queue as a list)."""
    if not settings.REDIS_URL or not queues:
        return {}
    import redis

    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=TIMEOUT)
        pipe = client.pipeline()
        ordered = sorted(queues)
        for queue in ordered:
            pipe.llen(queue)
        return dict(zip(ordered, pipe.execute(), strict=True))
    except Exception:
        return dict.fromkeys(queues)
