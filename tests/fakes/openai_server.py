"""A local OpenAI-compatible chat completions server (POST /v1/chat/completions).

Speaks the wire format the ``openai`` SDK expects: a ``chat.completion`` object, or with
``"stream": true`` server-sent events of ``chat.completion.chunk`` objects ending with
``data: [DONE]``; errors as ``{"error": {"message", "type", "code"}}``. It checks the
bearer key and that the request has a model and messages. Scripted answers (429 with
Retry-After, 500, a refusal, a slow answer) are queued with ``script()``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    content: str = ""
    refusal: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    finish_reason: str = "stop"


class FakeOpenAI:
    def __init__(self, api_key: str = "sk-fake-test-key", default_content: str = "Generated text.") -> None:
        self.api_key = api_key
        self.default_content = default_content
        self.requests: list[dict[str, Any]] = []
        self._replies: list[Reply] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def __enter__(self) -> FakeOpenAI:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _next(self) -> Reply:
        with self._lock:
            return self._replies.pop(0) if self._replies else Reply(content=self.default_content)

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/chat/completions":
                    return self._json(404, _error("Not found", "invalid_request_error", None))
                if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._json(401, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))  # fmt: skip
                body = json.loads(raw)
                if (
                    not body.get("model")
                    or not isinstance(body.get("messages"), list)
                    or not body["messages"]
                ):
                    return self._json(400, _error("model and messages are required", "invalid_request_error", None))  # fmt: skip
                fake.requests.append(body)
                reply = fake._next()
                time.sleep(reply.delay)
                if reply.status == 429:
                    return self._json(429, _error("Rate limit reached", "requests", "rate_limit_exceeded"), reply.headers)  # fmt: skip
                if reply.status != 200:
                    return self._json(reply.status, _error("The server had an error", "server_error", None))
                if body.get("stream"):
                    return self._stream(body["model"], reply)
                message = {"role": "assistant", "content": None if reply.refusal else reply.content,
                           "refusal": reply.refusal}  # fmt: skip
                self._json(200, {
                    "id": "chatcmpl-fake1", "object": "chat.completion", "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason,
                                 "logprobs": None}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                })  # fmt: skip

            def _stream(self, model: str, reply: Reply) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                words = reply.content.split(" ")
                deltas = [{"role": "assistant", "content": ""}] + [
                    {"content": w if i == 0 else " " + w} for i, w in enumerate(words)
                ]
                for i, delta in enumerate([*deltas, {}]):
                    chunk = {
                        "id": "chatcmpl-fake2", "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": model,
                        "choices": [{"index": 0, "delta": delta,
                                     "finish_reason": reply.finish_reason if i == len(deltas) else None}],
                    }  # fmt: skip
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}
