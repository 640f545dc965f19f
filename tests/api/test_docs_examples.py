"""The documented curl examples of docs/api.md work on a fresh install: after seed_demo (what
`make run` runs), against a live gunicorn in test mode, the quickstart (key → first SMS → its
message.delivered webhook, verified by bin/webhook-receiver with the standardwebhooks library)
and every example of "Sending on each channel" and "Calls" answer 2xx; then every other curl
line of docs/api.md and docs/webhooks.md, with the variables they name ($KEY, $CONTACT, $TASK,
$AGENT_KEY, $ARTIFACT, $ID, $METRICS_TOKEN) set up as a reader would have them."""

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


def every_curl_example(path: str, skip_section: str = "") -> list[str]:
    text = (ROOT / "docs" / path).read_text()
    if skip_section:
        start = text.index(f"\n## {skip_section}")
        end = text.find("\n## ", start + 1)
        text = text[:start] + text[end:]
    found = []
    for block in sh_blocks(text):
        for command in commands(block):
            found.append(re.sub(r"\s+#\s.*$", "", command))  # a trailing comment would swallow our options
    return found


def test_every_other_curl_example_of_api_md_and_webhooks_md_answers_2xx(tmp_path, settings):
    """Every curl line of docs/api.md (the quickstart is run above) and docs/webhooks.md, in the
    order the docs give them, against a live server, with the variables they name set up as a
    reader would have them: 2xx each (a 4xx means the docs or the code are wrong)."""
    from datetime import timedelta

    from django.utils import timezone

    from dossiers.services import artifact_store
    from event_webhooks import services as webhook_services
    from orchestrator.api.auth import api_key_create
    from orchestrator.models import AgentRegistration, ApiKeyRole

    call_command("seed_demo", stdout=io.StringIO())
    api_key, key = api_key_create(name="docs", contacts="write", all_tasks=True, webhooks=True)
    source = f"key:{api_key.pk}"
    far = AgentRegistration.objects.create(task_type="remote.echo", agent="far", channel="system", kind="remote",
                                           queue="remote", url="http://127.0.0.1:9/tasks", dispatch_only=True)  # fmt: skip
    agent_key = api_key_create(name="far", role=ApiKeyRole.AGENT, agent_registration=far)[1]
    remote_task = Task.objects.create(type="remote.echo", channel="system", status=TaskStatus.DISPATCHED,
                                      agent="far", source=source)  # fmt: skip
    later = Task.objects.create(type="diagnostic.echo", channel="system", status=TaskStatus.PENDING, source=source,
                                scheduled_for=timezone.now() + timedelta(days=1))  # fmt: skip
    contact = Contact.objects.get(phone="+14155550101")
    artifact = artifact_store(
        content=b"<p>hi</p>", content_type="text/html", kind="document", contact_id=contact.id
    )
    endpoint, _ = webhook_services.endpoint_create(url="http://127.0.0.1:9/hooks", event_types=["task.failed"],
                                                   owner=source)  # fmt: skip
    examples = every_curl_example("api.md", skip_section="Quickstart") + every_curl_example("webhooks.md")
    assert len(examples) >= 30
    env = platform_env(PATH=os.environ.get("PATH", ""), METRICS_TOKEN="docs-metrics-token",
                       MEDIA_ROOT=str(settings.MEDIA_ROOT))  # fmt: skip
    variables = {"KEY": key, "AGENT_KEY": agent_key, "CONTACT": str(contact.id), "TASK": str(remote_task.id),
                 "ARTIFACT": str(artifact.id), "ID": str(endpoint.id), "METRICS_TOKEN": "docs-metrics-token"}  # fmt: skip
    failures = []
    with web_server(env) as base:
        for example in examples:
            command = example.replace("http://127.0.0.1:8000", base).replace("localhost:8000", base)
            command += " -o /dev/stderr -w '%{http_code}'"
            # The cancel example cancels a task that has not run yet (a finished one is a 409).
            task = str(later.id) if "/cancel/" in command else str(remote_task.id)
            result = run(command, {**env, **variables, "TASK": task}, cwd=tmp_path)
            if not result.stdout.strip().startswith("2"):
                failures.append(f"{example}\n→ {result.stdout} {result.stderr[:500]}")
    assert not failures, "\n\n".join(failures)
    remote_task.refresh_from_db()
    later.refresh_from_db()
    assert remote_task.status == TaskStatus.SUCCEEDED and later.status == TaskStatus.CANCELLED
