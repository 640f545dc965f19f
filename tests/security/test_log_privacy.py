"""Logs without personal data: a whole flow in the production layout (gunicorn with the
production config and its access log, a separate Celery worker, the real Twilio SDK against
the local fake, LOG_LEVEL=INFO), then every line both processes wrote is searched for the
contact's number, email and name."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from twilio.request_validator import RequestValidator

from orchestrator.api.auth import api_key_create
from orchestrator.models import Task
from tests.fakes.twilio import FakeTwilio
from tests.support.services import (
    BIN,
    ROOT,
    celery_worker,
    free_port,
    platform_env,
    redis_server,
    stop_process,
    transactional_db,
    wait_for_port,
    wait_until,
)

pytestmark = [pytest.mark.services, transactional_db]

ACCOUNT, TOKEN = "AC" + "7" * 32, "7a" * 16
NAME, PHONE, EMAIL = "Zelda Quintessa", "+14155550177", "zelda.quintessa@example.com"
# Every form the identifiers could take in a log line.
NEEDLES = [
    PHONE,
    PHONE[1:],
    PHONE[2:],
    quote(PHONE),
    EMAIL,
    quote(EMAIL),
    "zelda.quintessa",
    "Zelda",
    "Quintessa",
]


def production_web(env: dict[str, str], log_path: Path):
    """gunicorn as bin/render-web runs it (its config, access log on stdout), on loopback."""
    port = free_port()
    env = {**env, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "comms_platform.wsgi:application", "--config", "python:comms_platform.gunicorn_conf",
         "-b", f"127.0.0.1:{port}", "-w", "1", "--threads", "4", "--access-logfile", "-"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for_port(port, proc=proc)
    return proc, log, f"http://127.0.0.1:{port}"


def signed(url: str, params: dict) -> dict:
    return {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, params)}


def test_a_full_flow_logs_no_number_email_or_name():
    # A private Redis: no heartbeat left by an earlier worker makes the agent look stale.
    with redis_server() as (redis_url, _, _):
        run_the_flow_and_audit_the_logs(redis_url)


def run_the_flow_and_audit_the_logs(redis_url: str) -> None:
    key = api_key_create(name="log-audit", contacts="write", all_tasks=True)[1]
    auth = {"Authorization": f"Api-Key {key}"}
    logs = Path(tempfile.mkdtemp(prefix="log-privacy-"))
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN).start()
    env = platform_env(REDIS_URL=redis_url, TWILIO_API_BASE_URL=fake.base_url, TWILIO_ACCOUNT_SID=ACCOUNT,
                       TWILIO_AUTH_TOKEN=TOKEN, TWILIO_SMS_FROM="+15005550006", LOG_LEVEL="INFO",
                       LOG_FORMAT="json", DISPATCH_IN_BACKGROUND="false")  # fmt: skip
    web, web_log, base = production_web(env, logs / "web.log")
    try:
        with celery_worker({**env, "PUBLIC_BASE_URL": base}, log_path=logs / "worker.log"):
            created = requests.post(f"{base}/api/contacts/", json={"name": NAME, "phone": PHONE, "email": EMAIL},
                                    headers=auth, timeout=30)  # fmt: skip
            assert created.status_code == 201, created.text
            contact = created.json()["id"]
            for term in (PHONE, EMAIL, "Quintessa"):  # searches land in the access log's request line
                found = requests.get(
                    f"{base}/api/contacts/", params={"search": term}, headers=auth, timeout=10
                )
                assert found.status_code == 200 and found.json()["results"], found.text
            sms = requests.post(f"{base}/api/tasks/", headers=auth, timeout=30, json={
                "type": "sms.send", "contact": contact, "payload": {"to": PHONE, "body": f"Hi {NAME.split()[0]}!"}})  # fmt: skip
            assert sms.status_code == 201, sms.text
            wait_until(lambda: fake.messages, timeout=30, message="the SDK's POST to the fake Twilio")
            sent = fake.messages[0]
            status_url = fake.posts()[0].form["StatusCallback"][0].split("#")[0]
            callback = {"MessageSid": sent["sid"], "MessageStatus": "delivered", "AccountSid": ACCOUNT,
                        "From": "+15005550006", "To": PHONE, "ApiVersion": "2010-04-01"}  # fmt: skip
            assert requests.post(
                status_url, data=callback, headers=signed(status_url, callback), timeout=10
            ).ok
            inbound_url = f"{base}/webhooks/twilio/messaging/inbound/"
            inbound = {"MessageSid": "SM" + "9" * 32, "AccountSid": ACCOUNT, "From": PHONE, "To": "+15005550006",
                       "Body": f"It's {NAME}, write to {EMAIL}", "NumMedia": "0"}  # fmt: skip
            assert requests.post(
                inbound_url, data=inbound, headers=signed(inbound_url, inbound), timeout=10
            ).ok
            email = requests.post(f"{base}/api/tasks/", headers=auth, timeout=30, json={
                "type": "email.send", "contact": contact, "payload": {"to": EMAIL, "subject": f"For {NAME}",
                                                                       "text": f"Dear {NAME}"}})  # fmt: skip
            assert email.status_code == 201, email.text
            timeline = requests.get(f"{base}/api/contacts/{contact}/timeline/", headers=auth, timeout=30)
            assert timeline.status_code == 200
            wait_until(lambda: Task.objects.get(id=sms.json()["id"]).status == "succeeded", timeout=30,
                       message="the SMS delivered")  # fmt: skip
            wait_until(
                lambda: Task.objects.filter(type="sms.inbound").exists(), timeout=30, message="the inbound"
            )
            wait_until(lambda: Task.objects.get(id=email.json()["id"]).status in ("succeeded", "in_progress"),
                       timeout=30, message="the email sent")  # fmt: skip
    finally:
        stop_process(web)
        web_log.close()
        fake.stop()

    lines = [
        (name, line) for name in ("web.log", "worker.log") for line in (logs / name).read_text().splitlines()
    ]
    assert len(lines) > 20
    leaks = [(name, needle, line) for name, line in lines for needle in NEEDLES if needle in line]
    assert not leaks, json.dumps(leaks[:5], indent=1)
    # The access log was on, and its request lines carry paths only (no ?search=…).
    assert len([line for _, line in lines if '] "GET /api/contacts/ HTTP/1.1" 200 ' in line]) == 3
    assert any("task.finished" in line for name, line in lines if name == "worker.log")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('"GET /api/contacts/?search=%2B14155550177 HTTP/1.1" 200', '"GET /api/contacts/?[query] HTTP/1.1" 200'),
        ("POST Request: https://api.twilio.com/2010-04-01/Messages.json?To=%2B14155550177",
         "POST Request: https://api.twilio.com/2010-04-01/Messages.json?[query]"),
        ("PAYLOAD: To=%2B14155550177&Body=write+zelda%40example.com", "PAYLOAD: To=[phone]&Body=[email]"),
        ('"WebSocket /ws/voice/relay/x/?exp=1&nonce=n&sig=s" [accepted]', '"WebSocket /ws/voice/relay/x/?[query]" [accepted]'),
        ("GET /a/MmU3ZGY4NjItZmQ5Ni00.1tq2xQ.abcdefghijklmnopqrstuv/", "GET /a/[token]/"),
        ("order 12345678 on 2026-11-29 at 10:00", "order 12345678 on 2026-11-29 at 10:00"),
    ],
)  # fmt: skip
def test_log_lines_lose_query_strings_tokens_and_encoded_identifiers(line, expected):
    from comms_platform.logs import _scrub_text

    assert _scrub_text(line, []) == expected


def test_third_party_loggers_that_print_recipients_are_quiet(settings):
    loggers = settings.LOGGING["loggers"]
    for name in ("twilio", "urllib3", "httpx", "openai"):
        assert loggers[name]["level"] == "WARNING", name
    assert loggers["uvicorn"]["handlers"] == ["console"]  # the scrubbing handler


def test_gunicorn_access_lines_carry_paths_only():
    from types import SimpleNamespace

    from gunicorn.config import Config

    from comms_platform.gunicorn_conf import PrivateAccessLogger, access_log_format

    logger = PrivateAccessLogger(Config())
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/api/contacts/?search=%2B14155550177", "PATH_INFO": "/api/contacts/",
               "QUERY_STRING": "search=%2B14155550177", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_REFERER": "https://comms.example.com/admin/?q=zelda%40example.com"}  # fmt: skip
    req = SimpleNamespace(headers=[("REFERER", environ["HTTP_REFERER"])])
    resp = SimpleNamespace(status="200 OK", response_length=10, sent=10, headers=[])
    atoms = logger.atoms(resp, req, environ, SimpleNamespace(seconds=0, microseconds=1000))
    line = access_log_format % atoms
    assert '"GET /api/contacts/ HTTP/1.1"' in line
    assert "14155550177" not in line and "zelda" not in line
