"""A local fake of Twilio's Calls API (``POST /2010-04-01/Accounts/<sid>/Calls.json``).

It speaks the wire format the twilio SDK uses: a form-encoded POST with HTTP basic auth
(account SID + auth token), multi-valued ``StatusCallbackEvent``; it answers 201 with a
call resource (JSON), or with Twilio's error body when told to fail. Every request it
accepted is kept in ``requests`` for the test to inspect.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

CALLS_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls\.json$")
CALL_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls/(CA[0-9a-fA-F]{32})\.json$")
MEMBER_PATH = re.compile(
    r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Queues/(QU[0-9a-fA-F]{32})/Members/(CA[0-9a-fA-F]{32}|Front)\.json$"
)
RECORDING_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Recordings/(RE[0-9a-fA-F]{32})\.wav$")


@dataclass
class CallRequest:
    account_sid: str
    auth: tuple[str, str]
    form: dict[str, list[str]]
    content_type: str
    call_sid: str = ""  # set on an update of an existing call (POST /Calls/<sid>.json)
    queue_sid: str = ""  # set on a queue member update (POST /Queues/<QU>/Members/<CA>.json)

    def one(self, name: str) -> str:
        return self.form[name][0]


@dataclass
class FakeTwilioCalls:
    account_sid: str
    auth_token: str
    requests: list[CallRequest] = field(default_factory=list)
    fail_with: tuple[int, int, str] | None = None  # (HTTP status, Twilio code, message)
    recordings: dict[str, bytes] = field(default_factory=dict)  # RecordingSid -> WAV bytes
    calls: dict[str, dict] = field(default_factory=dict)  # CallSid -> resource (set its "status")

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                member = MEMBER_PATH.match(self.path)
                if member is not None:  # dequeue a waiting caller to a URL (Queue Members API)
                    if self._basic_auth() != (fake.account_sid, fake.auth_token):
                        return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                    request = CallRequest(member.group(1), self._basic_auth(), parse_qs(body),
                                          self.headers.get("Content-Type", ""), call_sid=member.group(3),
                                          queue_sid=member.group(2))  # fmt: skip
                    fake.requests.append(request)
                    return self._json(200, {"call_sid": member.group(3), "queue_sid": member.group(2),
                                            "position": 1, "wait_time": 3, "date_enqueued": "Mon, 30 Nov 2026 03:00:00 +0000",
                                            "uri": self.path})  # fmt: skip
                update = CALL_PATH.match(self.path)
                if update is not None:  # update a call, e.g. Status=completed (hang up)
                    if self._basic_auth() != (fake.account_sid, fake.auth_token):
                        return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                    request = CallRequest(update.group(1), self._basic_auth(), parse_qs(body),
                                          self.headers.get("Content-Type", ""), call_sid=update.group(2))  # fmt: skip
                    fake.requests.append(request)
                    resource = {"sid": update.group(2), "account_sid": fake.account_sid, "direction": "outbound-api",
                                "status": request.form.get("Status", ["in-progress"])[0], "api_version": "2010-04-01"}  # fmt: skip
                    return self._json(200, resource)
                match = CALLS_PATH.match(self.path)
                if match is None:
                    return self._json(404, {"code": 20404, "message": "not found", "status": 404})
                auth = self._basic_auth()
                if auth != (fake.account_sid, fake.auth_token) or match.group(1) != fake.account_sid:
                    return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                request = CallRequest(
                    match.group(1), auth, parse_qs(body), self.headers.get("Content-Type", "")
                )
                fake.requests.append(request)
                if fake.fail_with:
                    status, code, message = fake.fail_with
                    return self._json(status, {"code": code, "message": message, "status": status,
                                               "more_info": f"https://www.twilio.com/docs/errors/{code}"})  # fmt: skip
                return self._json(201, fake.call_resource(request))

            def do_GET(self) -> None:
                one = CALL_PATH.match(self.path)
                if one is not None:  # GET one call (CallContext.fetch)
                    if self._basic_auth() != (fake.account_sid, fake.auth_token):
                        return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
                    call = fake.calls.get(one.group(2))
                    if call is None:
                        return self._json(404, {"code": 20404, "message": "not found", "status": 404})
                    return self._json(200, call)
                match = RECORDING_PATH.match(self.path)
                if match is None or match.group(2) not in fake.recordings:
                    return self._json(404, {"code": 20404, "message": "not found", "status": 404})
                if self._basic_auth() != (fake.account_sid, fake.auth_token):
                    return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
                data = fake.recordings[match.group(2)]
                self.send_response(200)
                self.send_header("Content-Type", "audio/x-wav")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _basic_auth(self) -> tuple[str, str]:
                header = self.headers.get("Authorization", "")
                if not header.startswith("Basic "):
                    return ("", "")
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                return (user, password)

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def call_resource(self, request: CallRequest) -> dict:
        sid = "CA" + secrets.token_hex(16)
        resource = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": request.one("To"),
            "from": request.one("From"),
            "status": "queued",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
            "duration": None,
        }
        self.calls[sid] = resource
        return resource

    def __enter__(self) -> FakeTwilioCalls:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
