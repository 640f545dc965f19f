"""A local fake of Twilio's REST API (Messages) and media host, for the real ``twilio`` SDK.

It speaks Twilio's wire format: form-encoded POST to
``/2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic auth (account SID and
auth token), JSON answers shaped like Twilio's (errors: ``{"code", "message", "status",
"more_info"}``), and media URLs that need basic auth and redirect to the content, as
Twilio's do. It records every request so tests can assert the exact fields that left.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a batch opening eight connections at once (two
    # batches, sixteen) overflows it, and a dropped SYN is retried only after a second — a delay
    # real Twilio does not add.
    request_queue_size = 128
    daemon_threads = True


@dataclass
class Received:
    method: str
    path: str
    form: dict[str, list[str]]
    query: dict[str, list[str]]
    auth: tuple[str, str] | None
    authorized: bool
    at: float = field(default_factory=time.monotonic)  # when it arrived
    answered: float | None = None  # when its answer was written (POSTs)
    status: int | None = None  # the HTTP status it was answered with (POSTs)


@dataclass
class Scripted:
    status: int
    code: int | None = None
    message: str = ""
    retry_after: str | None = None  # a Retry-After header on the answer
    hang: float = 0.0  # accept the message, then answer only after this many seconds


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    requests: list[Received] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)  # answers for the next POSTs, in order
    messages: list[dict] = field(default_factory=list)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    # Fault tests: when ``hold`` is set, a send is accepted (stored, as Twilio would) and the
    # answer is held back until ``release`` is set; ``holding`` tells the test it happened.
    hold: bool = False
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    # Seconds every POST waits before its answer (real Twilio takes ~0.3 s per Messages call).
    latency: float = 0.0
    # Calls under way at once, and the most seen (concurrency tests).
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FakeTwilio:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _auth(self) -> tuple[str, str] | None:
                header = self.headers.get("Authorization", "")
                if not header.startswith("Basic "):
                    return None
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                return user, password

            def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, form: dict) -> Received:
                parts = urlsplit(self.path)
                auth = self._auth()
                item = Received(self.command, parts.path, form, parse_qs(parts.query), auth,
                                auth == (fake.account_sid, fake.auth_token))  # fmt: skip
                fake.requests.append(item)
                return item

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                item = self._record(form)
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    self._post(item, form)
                finally:
                    if item.answered is None:
                        fake._answered(item, 0)

            def _post(self, item: Received, form: dict) -> None:
                if not item.authorized:
                    return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
                if item.path != f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json":
                    return self._json(404, {"code": 20404, "message": "not found", "status": 404})
                with fake._lock:
                    answer = fake.script.pop(0) if fake.script else None
                if fake.latency:
                    time.sleep(fake.latency)
                if answer is not None and answer.status >= 300:
                    headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
                    fake._answered(item, answer.status)
                    return self._json(answer.status, {
                        "code": answer.code, "message": answer.message or "error", "status": answer.status,
                        "more_info": f"https://www.twilio.com/docs/errors/{answer.code}",
                    }, headers)  # fmt: skip
                created = fake._create(form)
                if answer is not None and answer.hang:
                    time.sleep(answer.hang)  # accepted, but the answer comes too late
                if fake.hold:
                    fake.holding.set()
                    fake.release.wait(60)
                fake._answered(item, 201)
                with contextlib.suppress(OSError):  # the client may be gone (killed while waiting)
                    self._json(201, created)

            def do_GET(self) -> None:
                item = self._record({})
                if item.path.startswith("/media-content/"):
                    content, ctype = fake.media[item.path.rsplit("/", 1)[1]]
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                    return
                if not item.authorized:
                    return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
                if item.path.startswith("/media/"):
                    # Twilio redirects a media URL to short-lived storage.
                    self.send_response(307)
                    self.send_header(
                        "Location", f"{fake.base_url}/media-content/{item.path.rsplit('/', 1)[1]}"
                    )
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                one = re.search(r"/Messages/(SM\w+)\.json$", item.path)
                if one:  # GET one message (MessageContext.fetch)
                    found = [m for m in fake.messages if m["sid"] == one.group(1)]
                    if not found:
                        return self._json(404, {"code": 20404, "message": "Not found", "status": 404})
                    return self._json(200, found[0])
                to = item.query.get("To", [None])[0]
                found = [m for m in fake.messages if to is None or m["to"] == to]
                self._json(200, {"messages": found, "next_page_uri": None, "page": 0, "page_size": 50,
                                 "uri": item.path, "first_page_uri": item.path, "previous_page_uri": None,
                                 "end": len(found), "start": 0})  # fmt: skip

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def _create(self, form: dict[str, list[str]]) -> dict:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        sid = "SM" + secrets.token_hex(16)
        message = {
            "sid": sid, "account_sid": self.account_sid, "to": form["To"][0],
            "from": form.get("From", [None])[0], "messaging_service_sid": form.get("MessagingServiceSid", [None])[0],
            "body": form.get("Body", [""])[0], "status": "accepted" if "MessagingServiceSid" in form else "queued",
            "num_segments": "1", "num_media": str(len(form.get("MediaUrl", []))), "direction": "outbound-api",
            "api_version": "2010-04-01", "date_created": now, "date_updated": now, "date_sent": None,
            "error_code": None, "error_message": None, "price": None, "price_unit": "USD",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json", "subresource_uris": {},
        }  # fmt: skip
        self.messages.append(message)
        return message

    def _answered(self, item: Received, status: int) -> None:
        """Counted out when the answer is about to leave (the client may send its next call as
        soon as it has read it)."""
        with self._lock:
            self.in_flight -= 1
        item.status, item.answered = status, time.monotonic()

    def posts(self) -> list[Received]:
        return [r for r in self.requests if r.method == "POST"]

    def add_media(self, name: str, content: bytes, content_type: str) -> str:
        self.media[name] = (content, content_type)
        return f"{self.base_url}/media/{name}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
