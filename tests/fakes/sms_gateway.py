"""A local fake of a generic HTTP SMS gateway (agents/messaging/providers/gateway.py): JSON
``POST /messages`` with a Bearer key → ``{"id", "status"}``; ``GET /messages/<id>``. It records
every request; ``script`` gives the next answers' HTTP statuses."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FakeGateway:
    api_key: str
    requests: list[dict] = field(default_factory=list)  # {"method", "path", "auth", "json"}
    script: list[int] = field(default_factory=list)
    messages: dict[str, dict] = field(default_factory=dict)

    def start(self) -> FakeGateway:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                auth = self.headers.get("Authorization", "")
                fake.requests.append({"method": method, "path": self.path, "auth": auth, "json": body})
                if auth != f"Bearer {fake.api_key}":
                    return self._answer(401, {"error": "unauthorized"})
                if fake.script:
                    return self._answer(fake.script.pop(0), {"error": "scripted"})
                if method == "POST" and self.path.endswith("/messages"):
                    sid = "gw_" + secrets.token_hex(8)
                    fake.messages[sid] = {"id": sid, "status": "queued", **body}
                    return self._answer(201, {"id": sid, "status": "queued"})
                sid = self.path.rsplit("/", 1)[-1]
                if method == "GET" and sid in fake.messages:
                    return self._answer(200, {"id": sid, "status": fake.messages[sid]["status"]})
                return self._answer(404, {"error": "not found"})

            def do_POST(self) -> None:
                self._handle("POST")

            def do_GET(self) -> None:
                self._handle("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
