"""``manage.py smoke`` against a real server process (gunicorn, test mode, simulated providers).

Parametrized over ``FLOWS``: a flow whose agent is registered and enabled must PASS; one whose
agent is not registered must show a FAIL row naming the type and make the exit code 1. As the
agents are merged in, their rows turn from the second kind to the first without a test change.
"""

from __future__ import annotations

import io
from contextlib import contextmanager, redirect_stdout
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from comms_platform import smoke
from orchestrator.api.auth import api_key_create
from orchestrator.models import AgentRegistration
from tests.support.services import platform_env, transactional_db, unavailable, web_server

pytestmark = transactional_db

CHANNEL_TYPES = ("whatsapp.send", "sms.send", "email.send")
# Types a flow needs besides its own (the email flow generates its artifact first).
EXTRA_TYPES = {"email": ("content.generate",)}


def run_smoke(
    *flows: str, base_url: str | None = None, timeout: float = 20.0
) -> tuple[int, list[list[str]], str]:
    """(exit code, table rows split into flow/result/seconds/detail, full output)."""
    out = io.StringIO()
    options = {"timeout": timeout, "flow": list(flows) or None}
    if base_url:
        options |= {
            "base_url": base_url,
            "api_key": api_key_create(name="smoke-test", contacts="write", all_tasks=True)[1],
        }
    code = 0
    with redirect_stdout(out):
        try:
            call_command("smoke", stdout=out, **options)
        except SystemExit as exc:
            code = exc.code
    text = out.getvalue()
    lines = text.strip().splitlines()
    assert lines[0].split() == ["flow", "result", "seconds", "detail"], text
    rows = [line.split(None, 3) for line in lines[1:-1]]
    return code, rows, text


@contextmanager
def server():
    with web_server(platform_env()) as base_url:
        yield base_url


def enabled_types() -> set[str]:
    return set(AgentRegistration.objects.filter(enabled=True).values_list("task_type", flat=True))


@pytest.mark.parametrize("flow", smoke.FLOWS, ids=[f.name for f in smoke.FLOWS])
def test_each_flow_passes_when_its_agent_is_registered_and_fails_clearly_otherwise(flow):
    enabled = enabled_types()
    with server() as base_url:
        code, rows, text = run_smoke(flow.name, base_url=base_url)
    assert len(rows) == 1, text
    name, result, seconds, detail = rows[0]
    assert name == flow.name and float(seconds) >= 0
    if flow.task_type == "notify":
        expected_pass = any(t in enabled for t in CHANNEL_TYPES)
        missing_message = "no enabled agent for"
    else:
        needed = (*EXTRA_TYPES.get(flow.name, ()), flow.task_type)
        missing = [t for t in needed if t not in enabled]
        expected_pass = not missing
        missing_message = f"no agent registered for {missing[0]}" if missing else ""
    if expected_pass:
        assert (result, code) == ("PASS", 0), text
    else:
        assert (result, code) == ("FAIL", 1), text
        assert missing_message in detail, text


def test_diagnostic_flow_passes_and_a_disabled_agent_fails_with_a_clear_row():
    with server() as base_url:
        code, rows, text = run_smoke("diagnostic", base_url=base_url)
    assert code == 0 and rows[0][:2] == ["diagnostic", "PASS"], text
    assert rows[0][3] == "intake → queue → worker → handler"

    AgentRegistration.objects.filter(task_type="diagnostic.echo").update(enabled=False)
    with server() as base_url:  # a fresh process: no cached registry rows
        code, rows, text = run_smoke("diagnostic", base_url=base_url)
    assert code == 1, text
    assert rows[0][:2] == ["diagnostic", "FAIL"]
    assert rows[0][3] == "no agent registered for diagnostic.echo (the API refused the type)"
    assert text.strip().endswith("0/1 passed")


def test_fallback_chain_passes_when_the_first_channel_fails():
    """Stand-in agents: WhatsApp fails permanently, SMS delivers; notify must fall back and pass."""
    stand_ins = {
        "whatsapp.send": "tests.support.handlers.fail_permanently",
        "sms.send": "tests.support.handlers.succeed",
    }
    for task_type, path in stand_ins.items():
        AgentRegistration.objects.update_or_create(
            task_type=task_type,
            defaults={"agent": "messaging", "channel": task_type.split(".")[0], "kind": "in_process",
                      "queue": "messaging", "handler": path, "enabled": True},
        )  # fmt: skip
    with server() as base_url:
        code, rows, text = run_smoke("notify", base_url=base_url)
    assert code == 0, text
    assert rows[0][:2] == ["notify", "PASS"]
    assert "whatsapp: failed → sms: succeeded" in rows[0][3]


def test_whole_run_exits_zero_only_when_every_flow_passed():
    with server() as base_url:
        code, rows, text = run_smoke(base_url=base_url)
    assert [r[0] for r in rows] == [f.name for f in smoke.FLOWS]
    assert all(r[1] in ("PASS", "FAIL") for r in rows)
    assert code == (0 if all(r[1] == "PASS" for r in rows) else 1), text
    assert text.strip().endswith(f"{sum(r[1] == 'PASS' for r in rows)}/{len(rows)} passed")


@transactional_db
@pytest.mark.services
def test_without_base_url_it_starts_its_own_server():
    from django.db import connection

    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL: the smoke server shares the test database")
    from conversations.models import Conversation
    from dossiers.models import Contact, Message
    from orchestrator.models import Task

    # What an interrupted run left: its marked contact and a message.
    leftover = Contact.objects.create(name="Smoke test", phone="+14155550100", email="smoke@example.com",
                                      synthetic=True)  # fmt: skip
    Task.objects.create(type="sms.inbound", channel="sms", status="in_progress", contact=leftover,
                        payload={"from": "+14155550100", "body": "SMOKE interrupted"})  # fmt: skip
    code, rows, text = run_smoke("diagnostic", "inbound", "whatsapp")
    assert code == 0, text
    assert [row[:2] for row in rows] == [["diagnostic", "PASS"], ["whatsapp", "PASS"], ["inbound", "PASS"]], (
        text
    )
    assert not Conversation.objects.exists()  # the smoke conversation never reached the inbox
    # Cleaned up: this run's contact and the interrupted run's, with their messages and payloads.
    assert not Contact.objects.filter(phone="+14155550100").exists()
    assert not Message.objects.filter(body__contains="SMOKE").exists()
    assert not Task.objects.filter(payload__icontains="+14155550100").exists()


def test_smoke_never_uses_a_real_contact_with_its_phone():
    from dossiers.models import Contact

    real = Contact.objects.create(name="Real Customer", phone="+14155550100", email="smoke@example.com")
    ctx = smoke.Context(api=None, timeout=1, phone="+14155550100", email="smoke@example.com")
    with pytest.raises(smoke.SmokeFailure, match="belong to a real contact"):
        smoke.contact_in_database(ctx)
    assert smoke.erase_local_contacts(phone="+14155550100", email="smoke@example.com") == 0
    assert Contact.objects.filter(pk=real.pk).exists()


def test_base_url_without_api_key_is_refused():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--base-url needs --api-key"):
        call_command("smoke", base_url="http://127.0.0.1:9")


@pytest.mark.parametrize("hour", range(24))
def test_midday_timezone_puts_the_contact_near_noon(hour):
    from zoneinfo import ZoneInfo

    now = datetime(2026, 3, 29, hour, 30, tzinfo=UTC)
    local = now.astimezone(ZoneInfo(smoke.midday_timezone(now)))
    assert 8 <= local.hour <= 20  # outside the default 21:00-08:00 quiet hours


def test_a_reused_contact_gets_the_smoke_time_zone():
    """An inbound smoke message creates the contact first (time zone UTC); the contacts API then
    returns it unchanged (200). The local run must still move it near noon, or the notify flow
    is deferred by quiet hours whenever it is night in UTC."""
    from dossiers.models import Contact

    existing = Contact.objects.create(phone="+14155550100", timezone="UTC")

    class ExistingContactApi:
        def post(self, path, body):
            assert path == "/api/contacts/"
            return 200, {"id": str(existing.id)}

    ctx = smoke.Context(api=ExistingContactApi(), timeout=1, phone="+14155550100", email="smoke@example.com")
    assert smoke.contact_via_api_or_database(ctx) == str(existing.id)
    existing.refresh_from_db()
    assert existing.timezone == smoke.midday_timezone()
