"""A remote (dispatch-only) agent: signed POST out, PATCH callbacks back."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from comms_platform import signing
from orchestrator import registry
from orchestrator.api.auth import api_key_create
from orchestrator.models import AgentRegistration, ApiKeyRole, Task
from orchestrator.states import TaskStatus
from tests.support.services import platform_env, transactional_db, wait_until, web_server

S = TaskStatus
SECRET = "remote-agent-secret-for-tests"


class FakeAgent:
    """A local HTTP server playing a remote agent: it checks our signature and records calls."""

    def __init__(self, status: int = 202) -> None:
        self.received: list[dict] = []
        self.verified: list[bool] = []
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                agent.verified.append(signing.verify(self.headers.get(signing.HEADER), body, [SECRET]))
                agent.received.append({"headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/tasks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def fake_agent():
    agent = FakeAgent()
    yield agent
    agent.close()


@transactional_db
@pytest.mark.services
def test_remote_agent_round_trip(fake_agent):
    far = AgentRegistration.objects.create(task_type="remote.echo", agent="far", channel="system", kind="remote",
                                           queue="remote", url=fake_agent.url, dispatch_only=True)  # fmt: skip
    registry.invalidate()
    client_key = api_key_create(name="client")[1]
    agent_key = api_key_create(name="far-agent", role=ApiKeyRole.AGENT, agent_registration=far)[1]
    env = platform_env(REMOTE_AGENT_SECRET=SECRET)  # no REDIS_URL: the server runs tasks in process
    with web_server(env) as base:
        response = requests.post(f"{base}/api/tasks/", json={"type": "remote.echo", "payload": {"x": 1}},
                                 headers={"Authorization": f"Api-Key {client_key}"}, timeout=30)  # fmt: skip
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        wait_until(lambda: fake_agent.received, message="the signed POST")
        assert fake_agent.verified == [True]
        delivered = fake_agent.received[0]
        assert delivered["body"]["task"]["id"] == task_id
        assert delivered["body"]["task"]["payload"] == {"x": 1}
        callback = delivered["body"]["callback_url"]
        assert callback == f"{base}/api/tasks/{task_id}/"
        assert Task.objects.get(id=task_id).status == S.DISPATCHED

        auth = {"Authorization": f"Api-Key {agent_key}"}
        progress = requests.patch(callback, json={"status": "in_progress", "provider_id": "far-1"}, headers=auth,
                                  timeout=10)  # fmt: skip
        assert progress.status_code == 200, progress.text
        done = requests.patch(
            callback, json={"status": "succeeded", "result": {"ok": True}}, headers=auth, timeout=10
        )
        assert done.status_code == 200
        illegal = requests.patch(callback, json={"status": "failed"}, headers=auth, timeout=10)
        assert illegal.status_code == 409
        assert "Illegal transition succeeded → failed" in illegal.json()["error"]["message"]
    task = Task.objects.get(id=task_id)
    assert (task.status, task.provider_id, task.result) == (S.SUCCEEDED, "far-1", {"ok": True})


def test_signature_verification_rules():
    body = b'{"task": 1}'
    header = signing.sign(body, "new-secret", timestamp=1_000_000)
    assert signing.verify(header, body, ["new-secret"], now=1_000_010)
    assert signing.verify(header, body, ["old-secret", "new-secret"], now=1_000_010)  # rotation
    assert not signing.verify(header, body + b" ", ["new-secret"], now=1_000_010)  # tampered
    assert not signing.verify(header, body, ["other"], now=1_000_010)  # wrong secret
    assert not signing.verify(header, body, ["new-secret"], now=1_000_000 + 301)  # too old
    assert not signing.verify(None, body, ["new-secret"])
    assert not signing.verify("garbage", body, ["new-secret"])


@pytest.mark.django_db
def test_remote_agent_refusal_fails_the_task(django_capture_on_commit_callbacks):
    agent = FakeAgent(status=422)
    try:
        AgentRegistration.objects.create(task_type="remote.echo", agent="far", channel="system", kind="remote",
                                         queue="remote", url=agent.url)  # fmt: skip
        registry.invalidate()
        from orchestrator.services import task_create

        with django_capture_on_commit_callbacks(execute=True):
            task, _ = task_create(type="remote.echo")
        task.refresh_from_db()
        assert (task.status, task.error_code) == (S.FAILED, "agent_refused")
        assert len(agent.received) == 1
    finally:
        agent.close()
