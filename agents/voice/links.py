"""The public URLs Twilio calls for one call task (built from PUBLIC_BASE_URL, which is
also what their signatures are computed over)."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse
from django.utils.crypto import salted_hmac


def public_url(name: str, task_id: Any) -> str:
    return settings.PUBLIC_BASE_URL + reverse(name, kwargs={"task_id": task_id})


def ws_base_url() -> str:
    """PUBLIC_WS_BASE_URL, or PUBLIC_BASE_URL with http(s) turned into ws(s)."""
    if settings.PUBLIC_WS_BASE_URL:
        return settings.PUBLIC_WS_BASE_URL
    base = settings.PUBLIC_BASE_URL
    return "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]


def relay_path(task_id: Any) -> str:
    return f"/ws/voice/relay/{task_id}/"


def relay_query(task_id: Any, *, now: float | None = None) -> str:
    """``exp``, ``nonce`` and our own HMAC (``sig``) over them and the task id. Twilio's
    X-Twilio-Signature covers the query too, so neither can be changed on the way; the
    consumer refuses an expired URL and opens at most one session per call."""
    expires = int((now if now is not None else time.time()) + settings.VOICE_RELAY_URL_TTL_SECONDS)
    nonce = secrets.token_urlsafe(18)
    return urlencode({"exp": expires, "nonce": nonce, "sig": relay_signature(task_id, expires, nonce)})


def relay_signature(task_id: Any, expires: Any, nonce: str) -> str:
    return salted_hmac("voice.relay-url", f"{task_id}|{expires}|{nonce}", algorithm="sha256").hexdigest()


def relay_ws_url(task_id: Any) -> str:
    """The websocket URL handed to Twilio in the TwiML: single-use, valid for
    VOICE_RELAY_URL_TTL_SECONDS."""
    return f"{ws_base_url()}{relay_path(task_id)}?{relay_query(task_id)}"


def twiml_url(task_id: Any) -> str:
    return public_url("voice-twiml", task_id)


def status_callback_url(task_id: Any) -> str:
    # The connection-override fragment makes Twilio retry a failed status callback.
    return public_url("voice-status", task_id) + settings.TWILIO_STATUS_CALLBACK_OVERRIDE


def recording_callback_url(task_id: Any) -> str:
    return public_url("voice-recording", task_id) + settings.TWILIO_STATUS_CALLBACK_OVERRIDE


def connect_action_url(task_id: Any) -> str:
    return public_url("voice-connect-action", task_id)


def handoff_dial_url(task_id: Any, handoff_task_id: Any) -> str:
    return public_url("voice-handoff-dial", task_id) + f"?handoff={handoff_task_id}"


def handoff_wait_url(task_id: Any, handoff_task_id: Any) -> str:
    return public_url("voice-handoff-wait", task_id) + f"?handoff={handoff_task_id}"


def handoff_queue_url(task_id: Any, handoff_task_id: Any) -> str:
    return public_url("voice-handoff-queue", task_id) + f"?handoff={handoff_task_id}"


def handoff_bridge_url(task_id: Any, handoff_task_id: Any, operator: str) -> str:
    query = urlencode({"handoff": str(handoff_task_id), "operator": operator})
    return public_url("voice-handoff-bridge", task_id) + f"?{query}"


def gather_url(task_id: Any) -> str:
    return public_url("voice-gather", task_id)
