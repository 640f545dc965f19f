"""The documented curl examples of docs/api.md work on a fresh install: after seed_demo (what
`make run` runs), against a live gunicorn in test mode, the quickstart (key → first SMS → its
message.delivered webhook, verified by bin/webhook-receiver with the standardwebhooks library)
and every example of "Sending on each channel" and "Calls" answer 2xx."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess

import pytest
from django.core.management import call_command

from dossiers.models import Contact
from orchestrator.models import Task
from orchestrator.states import TaskStatus
from tests.support.services import ROOT, free_port, platform_env, transactional_db, wait_until, web_server

pytestmark = [transactional_db, pytest.mark.services]

# Sent and reported by the simulated provider: delivered (succeeded) or any final state.
DONE = [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED]
DOC = (ROOT / "docs" / "api.md").read_text()


def section(title: str) -> str:
    start = DOC.index(f"\n## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else None]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """One string per curl command (continuation lines joined; comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]


def run(script: str, env: dict[str, str], cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_the_quickstart_and_the_channel_examples_work_against_a_live_server(tmp_path):
    call_command("seed_demo", stdout=io.StringIO())
    env = platform_env(PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    with web_server(env) as base:
        port = free_port()
        quickstart = sh_blocks(section("Quickstart"))[0]
        script = quickstart.replace("http://127.0.0.1:8000", base).replace("9000", str(port))
        out = tmp_path / "receiver.out"
        script = f"set -e\n{script}\necho $! > {tmp_path / 'receiver.pid'}\necho KEY=$KEY\n"
        done = subprocess.run(["bash", "-c", script], env=env, cwd=ROOT, stdout=open(out, "w"),  # noqa: SIM115
                              stderr=subprocess.STDOUT, timeout=60)  # fmt: skip
        pid = int((tmp_path / "receiver.pid").read_text())
        try:
            assert done.returncode == 0, out.read_text()
            wait_until(lambda: '"type": "message.delivered"' in out.read_text(), timeout=30,
                       message="the receiver to verify the message.delivered webhook")  # fmt: skip
            text = out.read_text()
            assert "verified msg_" in text and "REFUSED" not in text
            assert '"to": "+14155550123"' in text
        finally:
            os.kill(pid, signal.SIGTERM)
        key = re.search(r"KEY=(\S+)", out.read_text()).group(1)
        contact = Contact.objects.get(phone="+14155550101")
        examples = commands(sh_blocks(section("Sending on each channel"))[0])
        examples += commands(sh_blocks(section("Calls"))[0])
        assert len(examples) >= 6
        failures = []
        for example in examples:
            command = example.replace("http://127.0.0.1:8000", base) + " -o /dev/stderr -w '%{http_code}'"
            result = run(command, {**env, "KEY": key, "CONTACT": str(contact.id)})
            if not result.stdout.strip().startswith("2"):
                failures.append(f"{example}\n→ {result.stdout} {result.stderr[:500]}")
        assert not failures, "\n\n".join(failures)
        # The WhatsApp examples are not only accepted: they are sent (the seeded contact is inside
        # the 24-hour window, the seeded template is approved), not failed "whatsapp_window_closed".
        whatsapp = Task.objects.filter(type="whatsapp.send", parent__isnull=True)  # not the notify example's
        assert whatsapp.count() == 2
        wait_until(lambda: not whatsapp.exclude(status__in=DONE).exists(), timeout=30,
                   message="the WhatsApp examples to be sent")  # fmt: skip
        assert list(whatsapp.values_list("status", "error_code")) == [(TaskStatus.SUCCEEDED, "")] * 2
