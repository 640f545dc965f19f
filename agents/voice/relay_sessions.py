"""ConversationRelay sessions are single-use and live-only.

The URL in our TwiML carries ``exp``, ``nonce`` and ``sig`` (``links.relay_query``). A
websocket upgrade — already checked for X-Twilio-Signature, which covers that query — opens
a session only when our HMAC matches, the URL has not expired, the call is still live (its
task not final, the call not ended) and the call has no session yet. Twilio's signature
alone has no timestamp: without this, a captured handshake could be replayed for ever and
write a fake caller turn into the contact's dossier.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

from django.db import IntegrityError, transaction
from django.utils.crypto import constant_time_compare

from agents.voice import links
from agents.voice.models import RelaySession
from dossiers.models import Call
from orchestrator.models import Task
from orchestrator.states import FINAL

ENDED_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


class RelayRefused(Exception):
    """Why the upgrade is refused (logged; Twilio only sees the 403)."""


def relay_session_open(*, task_id: Any, query: str, now: float | None = None) -> RelaySession:
    """Claim the call's one session, or raise RelayRefused."""
    params = {k: v[0] for k, v in parse_qs(query).items() if v}
    expires, nonce, sig = params.get("exp", ""), params.get("nonce", ""), params.get("sig", "")
    if not (expires.isdigit() and nonce and sig):
        raise RelayRefused("the URL carries no expiry, nonce and signature")
    if not constant_time_compare(sig, links.relay_signature(task_id, expires, nonce)):
        raise RelayRefused("the URL's signature is wrong")
    if int(expires) < (now if now is not None else time.time()):
        raise RelayRefused("the URL has expired")
    task = Task.objects.filter(id=task_id, type="call.outbound").only("status").first()
    if task is None or task.status in FINAL:
        raise RelayRefused("the call is not in progress")
    call = Call.objects.filter(task_id=task_id).only("status", "ended_at").order_by("created_at").first()
    if call is None or call.ended_at is not None or call.status in ENDED_CALL_STATUSES:
        raise RelayRefused("the call is not in progress")
    try:
        with transaction.atomic():
            return RelaySession.objects.create(task_id=task_id, nonce=nonce)
    except IntegrityError:
        raise RelayRefused("the call already has a session (or the URL was used)") from None
