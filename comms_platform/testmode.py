"""Test mode is safe by default.

- **No published secrets.** Unless set in the environment, test mode's SECRET_KEY, the
  simulated Twilio auth token and the remote-agent secret are random values generated once
  per installation and kept in ``var/test-mode-secrets.json`` (mode 0600). Every process of
  one checkout (web, realtime, workers, tests) reads the same file, so signatures agree; no
  other installation can mint this one's artifact links or webhook signatures.
- **This machine only.** Test mode uses simulated providers and demo data, so it refuses to
  be reachable from the network unless ``ALLOW_TEST_MODE_ON_NETWORK`` is set: settings refuse
  non-local ALLOWED_HOSTS, ``bin/devserver`` and gunicorn refuse a non-loopback bind, and
  every request and websocket from a non-loopback address is answered 403.

This module is imported by settings: standard library only at import time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import tempfile
from pathlib import Path

SECRETS_FILE = "test-mode-secrets.json"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]", "testserver"})
NETWORK_REFUSAL = (
    "Test mode (simulated providers, demo data) serves only this machine. Set COMMS_MODE=production "
    "for a deployment, or ALLOW_TEST_MODE_ON_NETWORK=1 to expose test mode on purpose."
)


def _generate() -> dict[str, str]:
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),  # Twilio's shape: 32 hex characters
        "REMOTE_AGENT_SECRET": secrets.token_urlsafe(32),
    }


def installation_secrets(var_dir: Path) -> dict[str, str]:
    """This installation's test-mode secrets, created on first use.

    Several processes may start at once (gunicorn workers, pytest-xdist): the file is written
    to a temporary name and linked into place, so exactly one set wins and all read it."""
    path = var_dir / SECRETS_FILE
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=var_dir, prefix=".secrets-")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(_generate(), fh)
            os.chmod(tmp, 0o600)
            with contextlib.suppress(FileExistsError):  # another process won the race: use its values
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    values = json.loads(path.read_text())
    missing = set(_generate()) - set(values)
    if missing:  # an older file: add what it lacks, keep the rest
        values.update({k: v for k, v in _generate().items() if k in missing})
        path.write_text(json.dumps(values))
    return values


def is_local_host(host: str) -> bool:
    host = host.strip().lower()
    return host in LOCAL_HOSTS or host.endswith(".localhost")


def non_local_hosts(hosts: list[str]) -> list[str]:
    return [h for h in hosts if not is_local_host(h)]


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return address.strip().lower() == "localhost"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def bind_problem(binds: list[str]) -> str:
    """A refusal message when a server would listen beyond loopback, else ''."""
    for bind in binds:
        host = bind.rsplit(":", 1)[0] if ":" in bind and not bind.startswith("unix:") else bind
        if bind.startswith(("unix:", "fd://")):
            continue
        if not is_loopback(host):
            return f"Refusing to listen on {bind}: {NETWORK_REFUSAL}"
    return ""


def runserver_problem(argv: list[str]) -> str:
    """``manage.py runserver 0.0.0.0:8000`` in test mode: the refusal message, else ''."""
    if len(argv) < 2 or argv[1] != "runserver":
        return ""
    addr = next((a for a in argv[2:] if not a.startswith("-")), "")
    if addr.isdigit():  # a port only: runserver's default address, 127.0.0.1
        return ""
    host = addr.rsplit(":", 1)[0] if re.search(r":\d+$", addr) else addr
    return bind_problem([f"{host}:0"]) if host else ""


class LoopbackOnlyMiddleware:
    """Test mode: a request that did not come from this machine gets a 403."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        # No address at all: an in-process call (a WSGI test client) or a Unix socket — local.
        remote = request.META.get("REMOTE_ADDR") or "127.0.0.1"
        if not is_loopback(remote):
            from django.http import HttpResponseForbidden

            return HttpResponseForbidden(NETWORK_REFUSAL, content_type="text/plain")
        return self.get_response(request)


def loopback_only_websockets(app):
    """Test mode: an ASGI wrapper refusing websockets that did not come from this machine."""

    async def guarded(scope, receive, send):
        client = scope.get("client")  # None in-process (Channels' test communicator)
        if scope["type"] == "websocket" and client and not is_loopback(str(client[0])):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4403})
            return
        await app(scope, receive, send)

    return guarded
