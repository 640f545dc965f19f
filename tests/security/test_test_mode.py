"""Test mode is safe by default (comms_platform/testmode.py): its secrets are generated per
installation, never published constants, and it serves only this machine."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import subprocess

import pytest
from django.conf import settings

from comms_platform import testmode
from tests.support.services import BIN, ROOT, free_port

# What earlier versions shipped as test mode's fixed secrets (public in the repository).
PUBLISHED = {"test-mode-secret-key-not-for-production-use-0123456789", "0123456789abcdef0123456789abcdef",
             "test-mode-remote-agent-secret"}  # fmt: skip


def clean_env(**overrides: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "COMMS_MODE": "test",
        "DJANGO_SETTINGS_MODULE": "comms_platform.settings",
    }
    env.update(overrides)
    return env


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=clean_env(**env), capture_output=True, text=True, timeout=60)


def test_secrets_are_generated_once_per_installation(tmp_path):
    first = testmode.installation_secrets(tmp_path / "a")
    assert testmode.installation_secrets(tmp_path / "a") == first  # stable across restarts
    other = testmode.installation_secrets(tmp_path / "b")
    assert set(first) == {"SECRET_KEY", "TWILIO_AUTH_TOKEN", "REMOTE_AGENT_SECRET"}
    assert all(first[k] != other[k] for k in first)  # another installation, other secrets
    assert not PUBLISHED & set(first.values())
    assert len(first["SECRET_KEY"]) >= 50 and len(first["TWILIO_AUTH_TOKEN"]) == 32
    assert (tmp_path / "a" / testmode.SECRETS_FILE).stat().st_mode & 0o777 == 0o600


def _secrets_in(path: str, queue) -> None:
    from pathlib import Path

    queue.put(testmode.installation_secrets(Path(path))["SECRET_KEY"])


def test_processes_starting_together_agree(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_secrets_in, args=(str(tmp_path / "var"), queue)) for _ in range(6)]
    for p in procs:
        p.start()
    keys = {queue.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(10)
    assert len(keys) == 1
    assert [f.name for f in (tmp_path / "var").iterdir()] == [
        testmode.SECRETS_FILE
    ]  # no temporary files left


def test_the_running_settings_use_this_installations_file():
    printed = run([str(BIN / "python"), "-c", "import django; django.setup(); from django.conf import settings as s; "
                   "import json; print(json.dumps([s.SECRET_KEY, s.TWILIO_AUTH_TOKEN, s.REMOTE_AGENT_SECRETS[0]]))"])  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    values = json.loads(printed.stdout.strip().splitlines()[-1])
    stored = json.loads((ROOT / "var" / testmode.SECRETS_FILE).read_text())
    assert values == [stored["SECRET_KEY"], stored["TWILIO_AUTH_TOKEN"], stored["REMOTE_AGENT_SECRET"]]
    assert not PUBLISHED & set(values)


def test_non_local_allowed_hosts_are_refused_in_test_mode():
    refused = run([str(BIN / "python"), "manage.py", "check"], ALLOWED_HOSTS="comms.example.com,127.0.0.1")
    assert refused.returncode != 0
    assert "ALLOWED_HOSTS names comms.example.com" in refused.stderr
    assert "ALLOW_TEST_MODE_ON_NETWORK" in refused.stderr
    allowed = run([str(BIN / "python"), "manage.py", "check"], ALLOWED_HOSTS="comms.example.com",
                  ALLOW_TEST_MODE_ON_NETWORK="1")  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr


def test_devserver_refuses_a_network_bind_before_starting_anything():
    refused = run([str(BIN / "python"), "bin/devserver"], HOST="0.0.0.0", PORT=str(free_port()))
    assert refused.returncode != 0
    assert "Refusing to listen on 0.0.0.0" in refused.stderr
    assert "Operator console" not in refused.stdout


def test_gunicorn_refuses_a_network_bind_in_test_mode():
    refused = run([str(BIN / "gunicorn"), "comms_platform.wsgi:application", "--config",
                   "python:comms_platform.gunicorn_conf", "-b", f"0.0.0.0:{free_port()}"])  # fmt: skip
    assert refused.returncode != 0
    assert "Refusing to listen on 0.0.0.0" in refused.stderr


@pytest.mark.django_db
def test_requests_from_another_machine_are_refused(client):
    assert "comms_platform.testmode.LoopbackOnlyMiddleware" in settings.MIDDLEWARE
    assert client.get("/healthz", REMOTE_ADDR="127.0.0.1").status_code == 200
    refused = client.get("/healthz", REMOTE_ADDR="192.0.2.10")
    assert refused.status_code == 403 and b"serves only this machine" in refused.content
    assert client.get("/admin/login/", REMOTE_ADDR="10.0.0.5").status_code == 403
    assert client.get("/healthz", REMOTE_ADDR="").status_code == 200  # in-process, no socket


def test_websockets_from_another_machine_are_refused():
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["client"])

    guarded = testmode.loopback_only_websockets(app)
    sent = []

    async def scenario(client):
        async def receive():
            return {"type": "websocket.connect"}

        async def send(message):
            sent.append(message)

        await guarded({"type": "websocket", "client": client, "path": "/ws/calls/x/"}, receive, send)

    asyncio.run(scenario(("203.0.113.9", 5555)))
    asyncio.run(scenario(("127.0.0.1", 5555)))
    assert sent == [{"type": "websocket.close", "code": 4403}]
    assert reached == [("127.0.0.1", 5555)]


@pytest.mark.parametrize(
    ("binds", "refused"),
    [(["127.0.0.1:8000"], False), (["localhost:8000"], False), (["[::1]:8000"], False),
     (["0.0.0.0:8000"], True), (["[::]:8000"], True), (["10.0.0.2:80"], True), (["unix:/tmp/s"], False)],
)  # fmt: skip
def test_bind_problem(binds, refused):
    assert bool(testmode.bind_problem(binds)) is refused


def test_runserver_refuses_a_network_address():
    refused = run([str(BIN / "python"), "manage.py", "runserver", "--noreload", f"0.0.0.0:{free_port()}"])
    assert refused.returncode != 0
    assert "Refusing to listen on 0.0.0.0" in refused.stderr
