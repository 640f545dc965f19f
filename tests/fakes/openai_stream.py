"""A local OpenAI-compatible chat server that streams (``POST /v1/chat/completions``).

It answers ``stream: true`` requests with Server-Sent Events in the exact wire format the
``openai`` SDK parses: ``data: {chat.completion.chunk}`` lines (a role delta, content
deltas, ``tool_calls`` deltas split into pieces, a final chunk with ``finish_reason``),
then ``data: [DONE]``, sent with chunked transfer encoding. Each request body is kept in
``requests`` (the tests check the model, the messages and the tools that were sent).

Replies are queued with ``reply(tokens, tool=…)``; with none queued it echoes a default
answer. ``fail_status`` answers with an HTTP error; ``hang_seconds`` stalls mid-stream;
``token_delay`` spaces the tokens out.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 20+ clients connect at once (the default backlog is 5)


DEFAULT_TOKENS = ["Sure", ",", " I", " can", " help", " with", " that", "."]


@dataclass
class Reply:
    tokens: list[str]
    tool: tuple[str, dict[str, Any]] | None = None


@dataclass
class FakeOpenAIStream:
    model: str = "gpt-test"
    requests: list[dict[str, Any]] = field(default_factory=list)
    replies: deque = field(default_factory=deque)
    fail_status: int | None = None
    hang_seconds: float = 0.0
    token_delay: float = 0.0

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's pool expects

            def setup(self) -> None:
                super().setup()
                # Each SSE event is its own small write: without TCP_NODELAY, Nagle and the
                # client's delayed ACK hold every second one back ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path != "/v1/chat/completions":
                    return self._error(404, "not found")
                if not self.headers.get("Authorization", "").startswith("Bearer "):
                    return self._error(401, "missing API key")
                fake.requests.append(body)
                if fake.fail_status:
                    return self._error(fake.fail_status, "the model is unavailable")
                if not body.get("stream"):
                    return self._error(400, "this fake only streams")
                reply = fake.replies.popleft() if fake.replies else Reply(DEFAULT_TOKENS)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event in fake.events(body, reply):
                        self._chunk(f"data: {event}\n\n".encode())
                    self._chunk(b"")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up (an interrupt): nothing more to send

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _error(self, status: int, message: str) -> None:
                data = json.dumps(
                    {"error": {"message": message, "type": "server_error", "code": None}}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, tokens: list[str], tool: tuple[str, dict[str, Any]] | None = None) -> None:
        self.replies.append(Reply(tokens, tool))

    def events(self, body: dict[str, Any], reply: Reply):
        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return json.dumps({
                "id": chunk_id, "object": "chat.completion.chunk", "created": created,
                "model": body.get("model", self.model), "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            })  # fmt: skip

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for index, token in enumerate(reply.tokens):
            if self.token_delay:
                time.sleep(self.token_delay)
            if self.hang_seconds and index == 1:
                time.sleep(self.hang_seconds)
            yield chunk({"content": token})
        if reply.tool:
            name, arguments = reply.tool
            text = json.dumps(arguments)
            yield chunk({"tool_calls": [{"index": 0, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                                         "function": {"name": name, "arguments": ""}}]})  # fmt: skip
            for start in range(0, len(text), 7):  # arguments arrive in pieces
                yield chunk(
                    {"tool_calls": [{"index": 0, "function": {"arguments": text[start : start + 7]}}]}
                )
        yield chunk({}, "tool_calls" if reply.tool else "stop")
        yield "[DONE]"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self) -> FakeOpenAIStream:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """Serve the fake on its own (``python -m tests.fakes.openai_stream PORT``), e.g. for
    bench/voice_turn.py, so that it does not share a process (and a GIL) with the client."""
    import sys

    tokens = sys.argv[2].split("|") if len(sys.argv) > 2 else DEFAULT_TOKENS
    fake = FakeOpenAIStream()
    fake.server.server_close()
    fake.server = _Server(("127.0.0.1", int(sys.argv[1])), fake.server.RequestHandlerClass)
    fake.replies = _Endless(Reply(tokens))
    print(f"fake OpenAI stream on {fake.base_url}", flush=True)
    fake.server.serve_forever()


class _Endless(deque):
    """A reply queue that never runs out (the same answer every time)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self.reply = reply

    def __bool__(self) -> bool:
        return True

    def popleft(self) -> Reply:
        return self.reply


if __name__ == "__main__":
    main()
