"""A local fake of SendGrid's v3 Mail Send API (POST /v3/mail/send).

It checks what the real API checks that matters to us — the bearer key, the JSON
content type, and the documented shape of the body (personalizations with recipients,
``from``, a subject, ``content`` with text/plain before text/html, base64 attachments
with file names, string-valued custom args, at most 10 categories) — and answers like
SendGrid: 202 with ``X-Message-Id`` and an empty body, or ``{"errors": [...]}``.
Scripted answers (429, 5xx, 400, a slow answer) are queued with ``script()``.

https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def shape_errors(body: Any) -> list[dict[str, str]]:
    """The documented constraints of the Mail Send body that a wrong client would break."""
    errors: list[dict[str, str]] = []

    def err(fld: str, message: str) -> None:
        errors.append({"field": fld, "message": message, "help": None})

    if not isinstance(body, dict):
        return [{"field": None, "message": "Bad Request", "help": None}]
    people = body.get("personalizations")
    if not isinstance(people, list) or not 1 <= len(people) <= 1000:
        err(
            "personalizations",
            "The personalizations field is required and must have at least one personalization.",
        )
    else:
        for p in people:
            if not p.get("to") or not all(isinstance(t, dict) and "@" in t.get("email", "") for t in p["to"]):
                err("personalizations.0.to", "The to array is required for all personalization objects.")
    if "@" not in (body.get("from") or {}).get("email", ""):
        err("from.email", "The from email does not contain a valid address.")
    if not body.get("subject") and not all(p.get("subject") for p in people or []):
        err("subject", "The subject is required.")
    content = body.get("content") or []
    types = [c.get("type") for c in content]
    if not content or any(not c.get("value") for c in content):
        err("content", "The content value must be a string at least one character in length.")
    if "text/plain" in types and types.index("text/plain") != 0:
        err("content.0.type", "The text/plain content type must be first.")
    for i, a in enumerate(body.get("attachments") or []):
        try:
            base64.b64decode(a.get("content", ""), validate=True)
        except binascii.Error:
            err(f"attachments.{i}.content", "The attachment content must be base64 encoded.")
        if not a.get("filename"):
            err(f"attachments.{i}.filename", "The attachment filename is required.")
    args = body.get("custom_args") or {}
    if not all(isinstance(v, str) for v in args.values()):
        err("custom_args", "Custom args values must be strings.")
    if len(body.get("categories") or []) > 10:
        err("categories", "Too many categories. The maximum is 10.")
    return errors


class _Server(ThreadingHTTPServer):
    # socketserver's backlog is 5: a broadcast batch opens eight connections at once, and a
    # dropped SYN is retried only after a second.
    request_queue_size = 128


class FakeSendGrid:
    def __init__(self, api_key: str = "SG.fake-key.fake-secret") -> None:
        self.api_key = api_key
        self.received: list[Received] = []
        self.message_ids: list[str] = []
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    def __enter__(self) -> FakeSendGrid:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _next(self) -> Answer | None:
        with self._lock:
            return self._answers.pop(0) if self._answers else None

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v3/mail/send":
                    return self._answer(404, {"errors": [{"message": "not found", "field": None}]})
                if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._answer(401, {"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked", "field": None}]})  # fmt: skip
                if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                    return self._answer(415, {"errors": [{"message": "Content-Type should be application/json.", "field": None}]})  # fmt: skip
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._answer(400, {"errors": [{"message": "Bad Request", "field": None}]})
                fake.received.append(Received(self.path, dict(self.headers), body))
                scripted = fake._next()
                if scripted is not None:
                    time.sleep(scripted.delay)
                    if scripted.status != 202:
                        return self._answer(scripted.status, scripted.body, scripted.headers)
                errors = shape_errors(body)
                if errors:
                    return self._answer(400, {"errors": errors})
                message_id = secrets.token_urlsafe(16)[:22]
                fake.message_ids.append(message_id)
                self._answer(202, None, {"X-Message-Id": message_id})

            def _answer(self, status: int, body: dict | None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
