"""HMAC signatures for the platform's own HTTP calls (orchestrator → remote agents).

Header ``X-Comms-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``.
The timestamp bounds replays; a list of secrets lets a secret be rotated (sign with the
first, accept any). Compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

HEADER = "X-Comms-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    if not header or not secrets:
        return False
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    given = parts.get("v1", "")
    return any(hmac.compare_digest(sign(body, s, timestamp=t).split("v1=", 1)[1], given) for s in secrets)
