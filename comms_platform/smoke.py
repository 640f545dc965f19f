"""End-to-end smoke flows, driven through the tasks API only (``manage.py smoke``).

Each flow is one row of ``FLOWS``: the task type it exercises, a payload builder and a
success check on the final task (``GET /api/tasks/<id>/``). A new agent adds a row. A flow
whose type the platform does not serve fails with "no agent registered for <type>" — the
API refuses unknown and disabled types with a 400 — it never passes silently.

The flows speak HTTP to the API (``HttpApi``): of a deployment (``--base-url``), or of this
checkout served by ``local_server()`` in test mode, with an API key created for the run and
revoked afterwards. The inbound and WhatsApp flows also sign a Twilio inbound webhook, as
Twilio would, with the configured auth token.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

FINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
WAITING_FOR_OPERATOR = frozenset({"in_progress"})


class SmokeFailure(Exception):
    """A flow cannot go on; the message is the row's detail."""


class Api(Protocol):
    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]: ...

    def get(self, path: str) -> tuple[int, dict[str, Any]]: ...


class HttpApi:
    """The API of a running instance, over HTTP (``Authorization: Api-Key …``)."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Api-Key {api_key}"
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        import requests

        try:
            response = self.session.request(method, self.base_url + path, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SmokeFailure(f"{method} {path}: {type(exc).__name__}") from None
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {}

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._call("POST", path, body)

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        return self._call("GET", path)

    def post_form(self, path: str, data: dict[str, str], headers: dict[str, str]) -> int:
        """A provider's callback: form-encoded, no API key."""
        import requests

        try:
            response = requests.post(self.base_url + path, data=data, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SmokeFailure(f"POST {path}: {type(exc).__name__}") from None
        return response.status_code


# --- One run ----------------------------------------------------------------------------


@dataclass
class Context:
    """What flows share: the API, the deadline per task, the run id and the smoke contact."""

    api: Api
    timeout: float
    phone: str
    email: str
    contact_factory: Callable[[Context], str] | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    twilio_auth_token: str = ""
    twilio_account_sid: str = ""
    _contact_id: str | None = None

    def twilio_webhook(self, path: str, params: dict[str, str]) -> None:
        """POST ``params`` to our Twilio webhook, signed as Twilio signs (X-Twilio-Signature)."""
        from twilio.request_validator import RequestValidator

        post_form = getattr(self.api, "post_form", None)
        if post_form is None or not self.twilio_auth_token:
            raise SmokeFailure("needs a Twilio auth token (--twilio-auth-token) to sign the inbound webhook")
        url = self.api.base_url + path
        signature = RequestValidator(self.twilio_auth_token).compute_signature(url, params)
        status = post_form(path, params, {"X-Twilio-Signature": signature})
        if status != 200:
            raise SmokeFailure(f"the inbound webhook answered {status} (is --base-url the PUBLIC_BASE_URL?)")

    def find_task(self, query: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll ``GET /api/tasks/?<query>`` until a task matches."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            status, page = self.api.get(f"/api/tasks/?{query}")
            if status != 200:
                raise SmokeFailure(f"GET /api/tasks/?{query} answered {status}")
            for task in page.get("results", []):
                if match(task):
                    return task
            time.sleep(0.1)
        raise SmokeFailure(f"no task matching {query} after {self.timeout:g}s")

    def contact(self) -> str:
        """The smoke contact's id, created once per run (see ``ensure_contact``)."""
        if self._contact_id is None:
            factory = self.contact_factory or contact_via_api
            self._contact_id = factory(self)
        return self._contact_id

    def run_task(
        self, task_type: str, payload: dict[str, Any], done: frozenset[str] = FINAL, **extra: Any
    ) -> dict[str, Any]:
        """Create a task and poll it until its status is in ``done``; the task as the API shows it."""
        body = {"type": task_type, "payload": payload, "correlation_id": f"smoke-{self.run_id}", **extra}
        status, created = self.api.post("/api/tasks/", body)
        if status == 400 and "type" in (created.get("error", {}).get("fields") or {}):
            raise SmokeFailure(f"no agent registered for {task_type} (the API refused the type)")
        if status != 201:
            raise SmokeFailure(f"POST /api/tasks/ ({task_type}) answered {status}: {_error(created)}")
        return self.wait(created["id"], done)

    def wait(self, task_id: str, done: frozenset[str] = FINAL) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        task: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, task = self.api.get(f"/api/tasks/{task_id}/")
            if status != 200:
                raise SmokeFailure(f"GET /api/tasks/{task_id}/ answered {status}")
            if task.get("status") in done | FINAL:
                return task
            time.sleep(0.1)
        raise SmokeFailure(f"task {task_id} still {task.get('status')!r} after {self.timeout:g}s")


def _error(body: dict[str, Any]) -> str:
    error = body.get("error") or {}
    return str(error.get("message") or body)[:300]


def contact_via_api(ctx: Context) -> str:
    """Create the smoke contact with the contacts API (``POST /api/contacts/``), marked
    ``synthetic``: it stays out of the inbound queue and the retention job erases it."""
    status, body = ctx.api.post("/api/contacts/", contact_fields(ctx))
    if status in (200, 201) and body.get("id"):
        if body.get("synthetic") is False:
            raise SmokeFailure(_REAL_CONTACT.format(phone=ctx.phone, email=ctx.email))
        return str(body["id"])
    raise SmokeFailure(
        f"cannot create the smoke contact: POST /api/contacts/ answered {status}: {_error(body)}"
    )


def contact_via_api_or_database(ctx: Context) -> str:
    """Test mode against a local server: the contacts API when it exists, else the shared database.

    The API hands back an existing contact with this phone as it is: one that an inbound smoke
    message created (time zone UTC), or one from a run at another hour. Local runs share the
    database, so the smoke's time zone is put on it there; otherwise the notify flow would be
    deferred by quiet hours whenever it is night in UTC.
    """
    try:
        contact_id = contact_via_api(ctx)
    except SmokeFailure as exc:
        if "answered 404" not in str(exc) and "answered 405" not in str(exc):
            raise
        return contact_in_database(ctx)
    from dossiers.models import Contact

    _refresh(Contact.objects.get(id=contact_id), contact_fields(ctx))
    return contact_id


def contact_in_database(ctx: Context) -> str:
    """Create (or reuse) the smoke contact directly: in-process runs share the database."""
    from dossiers.models import Contact

    fields = contact_fields(ctx)
    contact = Contact.objects.filter(phone=fields["phone"], email=fields["email"]).first()
    if contact is None:
        contact = Contact.objects.create(**fields)
    elif not contact.synthetic:
        raise SmokeFailure(_REAL_CONTACT.format(phone=ctx.phone, email=ctx.email))
    else:
        _refresh(contact, fields)
    return str(contact.id)


_REAL_CONTACT = (
    "{phone} / {email} belong to a real contact, not a smoke contact: run smoke with a --phone and "
    "--email kept for smoke runs (it never writes to a real customer's dossier)"
)


def erase_local_contacts(*, phone: str, email: str) -> int:
    """Erase the smoke contacts of this phone or email (this run's, and any an interrupted run
    left): test mode, local server, shared database. Real contacts are never touched."""
    from django.db.models import Q

    from dossiers.models import Contact
    from dossiers.retention import contact_forget

    smoke = Contact.objects.filter(Q(phone=phone) | Q(email__iexact=email), synthetic=True)
    ids = list(smoke.values_list("pk", flat=True))
    for contact_id in ids:
        contact_forget(contact_id=contact_id, actor="manage.py smoke (clean-up)")
    return len(ids)


def _refresh(contact, fields: dict[str, str]) -> None:
    """The smoke's time zone (near noon now) on a reused contact."""
    if contact.timezone != fields["timezone"]:
        contact.timezone = fields["timezone"]
        contact.save(update_fields=["timezone", "updated_at"])


def contact_fields(ctx: Context) -> dict[str, str]:
    return {
        "name": "Smoke test",
        "phone": ctx.phone,
        "email": ctx.email,
        "whatsapp": f"whatsapp:{ctx.phone}",
        "locale": "en",
        "timezone": midday_timezone(),
        "synthetic": True,
    }


def midday_timezone(now: datetime | None = None) -> str:
    """A fixed-offset zone where it is around noon now, so quiet hours never defer the notify flow.

    ``Etc/GMT-N`` is UTC+N (the sign is inverted, POSIX style); offsets run from -12 to +14.
    """
    hour = (now or datetime.now(UTC)).hour
    offset = (12 - hour + 12) % 24 - 12  # -12..11
    if offset == 0:
        return "Etc/GMT"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


# --- The flows --------------------------------------------------------------------------

Check = Callable[[dict[str, Any], dict[str, Any]], str]


@dataclass(frozen=True)
class Flow:
    """One end-to-end flow: ``check(task, payload)`` raises SmokeFailure or returns a detail."""

    name: str
    task_type: str
    payload: Callable[[Context], dict[str, Any]]
    check: Check
    needs_contact: bool = False
    # The statuses the flow waits for (an inbound message waits for an operator: in_progress).
    done: frozenset[str] = FINAL
    # Instead of POST /api/tasks/: start the flow another way; returns (task, payload).
    start: Callable[[Context], tuple[dict[str, Any], dict[str, Any]]] | None = None


def _succeeded(task: dict[str, Any]) -> None:
    if task["status"] != "succeeded":
        code = task.get("error_code") or task["status"]
        raise SmokeFailure(
            f"{task['type']} {task['status']} ({code}): {task.get('error_message') or ''}".strip()
        )


def _provider_id(prefix: str) -> Check:
    def check(task: dict[str, Any], payload: dict[str, Any]) -> str:
        _succeeded(task)
        sid = task.get("provider_id") or ""
        if not (sid.startswith(prefix) and len(sid) == 34):
            raise SmokeFailure(f"succeeded without a {prefix}… provider id (got {sid!r})")
        return sid

    return check


def check_echo(task: dict[str, Any], payload: dict[str, Any]) -> str:
    _succeeded(task)
    if task.get("result", {}).get("echo") != payload:
        raise SmokeFailure(f"echo came back as {task.get('result')!r}")
    return "intake → queue → worker → handler"


def check_call(task: dict[str, Any], payload: dict[str, Any]) -> str:
    sid = _provider_id("CA")(task, payload)
    result = task.get("result") or {}
    # The voice agent reports the transcript's size as result.turns (the turns are in the dossier).
    turns = result.get("turns") or result.get("transcript") or 0
    count = turns if isinstance(turns, int) else len(turns)
    if count < 1:
        raise SmokeFailure(f"call {sid} succeeded without a transcript (result.turns is {turns!r})")
    return f"{sid}, {count} transcript turns"


def check_email(task: dict[str, Any], payload: dict[str, Any]) -> str:
    _succeeded(task)
    if not task.get("provider_id"):
        raise SmokeFailure("email succeeded without a provider message id")
    return f"{task['provider_id']} with artifact {payload['artifact']}"


def check_inbound(task: dict[str, Any], payload: dict[str, Any]) -> str:
    """An inbound message is parked for the operators: in progress, in the inbound queue."""
    if task["status"] != "in_progress":
        raise SmokeFailure(
            f"inbound task {task['status']} ({task.get('error_code') or ''}), not waiting in the queue"
        )
    queued = [e for e in task.get("events", []) if (e.get("details") or {}).get("queue") == "inbound"]
    if not queued:
        raise SmokeFailure(
            "inbound task in progress but not in the inbound queue (no event with queue=inbound)"
        )
    return f"inbound from {payload['from']} waits in the inbound queue"


def inbound_message(ctx: Context, channel: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A message from the smoke contact through the real inbound webhook; its parked task."""
    from django.conf import settings

    contact_id = ctx.contact()
    body = f"SMOKE {ctx.run_id} {channel}"
    sender = f"whatsapp:{ctx.phone}" if channel == "whatsapp" else ctx.phone
    to = settings.TWILIO_WHATSAPP_FROM if channel == "whatsapp" else settings.TWILIO_SMS_FROM
    params = {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": ctx.twilio_account_sid, "From": sender,
              "To": to or "", "Body": body, "NumMedia": "0", "NumSegments": "1"}  # fmt: skip
    if channel == "whatsapp":
        params.update({"WaId": ctx.phone.lstrip("+"), "ProfileName": "Smoke test"})
    ctx.twilio_webhook("/webhooks/twilio/messaging/inbound/", params)
    task = ctx.find_task(f"type={channel}.inbound&contact={contact_id}",
                         lambda t: (t.get("payload") or {}).get("body") == body)  # fmt: skip
    return ctx.wait(task["id"], WAITING_FOR_OPERATOR), {"from": sender, "body": body}


def start_inbound(ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
    return inbound_message(ctx, "sms")


def start_whatsapp(ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
    """WhatsApp delivers free text only inside the 24-hour window: the contact writes first."""
    inbound_message(ctx, "whatsapp")
    payload = {"to": f"whatsapp:{ctx.phone}", "body": f"Smoke test {ctx.run_id}"}
    return ctx.run_task("whatsapp.send", payload, contact=ctx.contact()), payload


def check_notify(task: dict[str, Any], payload: dict[str, Any]) -> str:
    chain = (task.get("result") or {}).get("chain") or {}
    steps = " → ".join(f"{a['channel']}: {a['status']}" for a in chain.get("attempts", []))
    if task["status"] != "succeeded":
        raise SmokeFailure(f"notify {task['status']}: {task.get('error_message') or steps}")
    return f"rule {chain.get('rule')!r}: {steps}"


def email_payload(ctx: Context) -> dict[str, Any]:
    """Generate the artifact first (content.generate), then attach it."""
    generated = ctx.run_task("content.generate", {"prompt": f"A two-line smoke-test note ({ctx.run_id})."})
    _succeeded(generated)
    artifact = (generated.get("result") or {}).get("artifact") or (generated.get("result") or {}).get(
        "artifact_id"
    )
    if not artifact:
        raise SmokeFailure("content.generate succeeded without an artifact in its result")
    return {
        "to": ctx.email,
        "subject": f"Smoke test {ctx.run_id}",
        "text": "The generated note is attached.",
        "artifact": artifact,
    }


FLOWS: list[Flow] = [
    Flow("diagnostic", "diagnostic.echo", lambda ctx: {"smoke": ctx.run_id}, check_echo),
    Flow(
        "sms",
        "sms.send",
        lambda ctx: {"to": ctx.phone, "body": f"Smoke test {ctx.run_id}"},
        _provider_id("SM"),
    ),
    Flow("whatsapp", "whatsapp.send", lambda ctx: {}, _provider_id("SM"), start=start_whatsapp),
    Flow(
        "call",
        "call.outbound",
        lambda ctx: {
            "to": ctx.phone,
            "greeting": "This is a smoke test call.",
            "goal": "Confirm the line works.",
        },
        check_call,
    ),
    Flow("email", "email.send", email_payload, check_email),
    Flow(
        "inbound",
        "sms.inbound",
        lambda ctx: {},
        check_inbound,
        start=start_inbound,
        done=WAITING_FOR_OPERATOR,
    ),
    Flow(
        "notify",
        "notify",
        lambda ctx: {"body": f"Smoke test {ctx.run_id}: a fallback chain.", "subject": "Smoke test"},
        check_notify,
        needs_contact=True,
    ),
]


@dataclass(frozen=True)
class Row:
    flow: str
    result: str  # PASS | FAIL
    seconds: float
    detail: str


def run_flow(ctx: Context, flow: Flow) -> Row:
    started = time.monotonic()
    try:
        if flow.start is not None:
            task, payload = flow.start(ctx)
        else:
            payload = flow.payload(ctx)
            extra = {"contact": ctx.contact()} if flow.needs_contact else {}
            task = ctx.run_task(flow.task_type, payload, done=flow.done, **extra)
        try:
            detail = flow.check(task, payload)
        finally:
            if task.get("status") not in FINAL:
                # Leave nothing waiting for an operator or a provider (the inbound queue).
                ctx.api.post(f"/api/tasks/{task['id']}/cancel/", {"reason": f"smoke test {ctx.run_id}"})
        result = "PASS"
    except SmokeFailure as exc:
        detail, result = str(exc), "FAIL"
    except Exception as exc:  # a smoke run reports every flow, whatever one of them hit
        detail, result = f"{type(exc).__name__}: {exc}", "FAIL"
    return Row(flow.name, result, time.monotonic() - started, detail)


def run(ctx: Context, flows: list[Flow]) -> list[Row]:
    return [run_flow(ctx, flow) for flow in flows]


def render(rows: list[Row]) -> str:
    header = ("flow", "result", "seconds", "detail")
    lines = [(r.flow, r.result, f"{r.seconds:.2f}", r.detail) for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(3)]
    out = []
    for cells in [header, *lines]:
        out.append(
            "  ".join(str(c).ljust(w) for c, w in zip(cells[:3], widths, strict=True)) + "  " + cells[3]
        )
    passed = sum(r.result == "PASS" for r in rows)
    out.append(f"{passed}/{len(rows)} passed")
    return "\n".join(out)


def _database_url() -> str:
    """The URL of the database this process uses (the server must share it)."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        if db["NAME"] in ("", ":memory:") or str(db["NAME"]).startswith("file:memorydb"):
            raise SmokeFailure("the smoke server cannot share an in-memory SQLite database")
        return f"sqlite:///{db['NAME']}"
    auth = quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@contextmanager
def local_server(*, timeout: float = 30.0) -> Iterator[str]:
    """This checkout served by uvicorn on a free port, in test mode, for a run without --base-url.

    The simulated providers call back to ``PUBLIC_BASE_URL`` and the simulated callee speaks to
    the voice websocket, so the flows need a real server. It runs tasks in process (no broker)
    on the same database as this command; yields its base URL.
    """
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["COMMS_MODE"] = "test"
    env["PUBLIC_BASE_URL"] = base
    env["DJANGO_SETTINGS_MODULE"] = "comms_platform.settings"
    env["DATABASE_URL"] = _database_url()
    uvicorn = Path(sys.executable).parent / "uvicorn"
    proc = subprocess.Popen(
        [str(uvicorn), "comms_platform.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--log-level", "warning"],
        cwd=Path(__file__).resolve().parent.parent, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SmokeFailure(f"the local server exited with {proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        else:
            raise SmokeFailure(f"the local server did not listen within {timeout:g}s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
