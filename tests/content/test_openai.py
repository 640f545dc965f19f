"""The real ``openai`` SDK against a local OpenAI-compatible server: plain and streaming
answers, 429 retried with backoff, timeouts and refusals failing the task with the reason."""

from __future__ import annotations

import pytest

from agents.content.generator import generate_text
from dossiers.models import Artifact, Contact, Message
from orchestrator.errors import PermanentError, TransientError
from orchestrator.models import Task
from orchestrator.services import task_create
from tests.fakes.openai_server import Reply

pytestmark = pytest.mark.django_db


def run(capture, payload, contact=None) -> Task:
    with capture(execute=True):
        task, _ = task_create(
            type="content.generate", payload=payload, contact_id=contact.id if contact else None
        )
    task.refresh_from_db()
    return task


def test_plain_answer_and_the_request_sent(openai_fake):
    openai_fake.script(Reply(content="  A short summary.  "))

    text = generate_text(prompt="Summarise the order", context={"name": "Ada"}, system="Be brief.")

    assert text == "A short summary."
    [request] = openai_fake.requests
    assert request["model"] == "test-model-1"
    assert request["max_tokens"] == 400
    assert "stream" not in request
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Facts about the recipient:\nname: Ada"},
        {"role": "user", "content": "Summarise the order"},
    ]


def test_streaming_answer_is_joined(openai_fake):
    openai_fake.script(Reply(content="<p>Streaming works end to end.</p>"))

    assert generate_text(prompt="Write", stream=True) == "<p>Streaming works end to end.</p>"
    assert openai_fake.requests[0]["stream"] is True


def test_rate_limit_carries_retry_after(openai_fake):
    openai_fake.script(Reply(status=429, headers={"Retry-After": "7"}))
    with pytest.raises(TransientError) as exc:
        generate_text(prompt="x")
    assert (exc.value.code, exc.value.retry_after) == ("llm_rate_limited", 7.0)


def test_refusal_is_permanent_with_the_reason(openai_fake):
    openai_fake.script(Reply(refusal="I can't help with that request."))
    with pytest.raises(PermanentError) as exc:
        generate_text(prompt="x")
    assert exc.value.code == "llm_refused"
    assert "I can't help with that request." in exc.value.message


def test_rate_limit_then_success_is_retried_by_the_orchestrator(
    openai_fake, django_capture_on_commit_callbacks
):
    openai_fake.script(
        Reply(status=429, headers={"Retry-After": "0"}), Reply(content="Order 42 shipped on Monday.")
    )

    task = run(
        django_capture_on_commit_callbacks, {"prompt": "Summarise the order", "inputs": {"order": "42"}}
    )

    assert len(openai_fake.requests) == 2
    assert task.status == "succeeded", task.error_message
    assert task.attempts == 2
    artifact = Artifact.objects.get(id=task.result["artifact_id"])
    assert (artifact.kind, artifact.content_type) == ("text", "text/plain; charset=utf-8")
    assert artifact.size == len(b"Order 42 shipped on Monday.")


def test_html_document_is_streamed_and_stored(openai_fake, django_capture_on_commit_callbacks):
    ada = Contact.objects.create(name="Ada", email="ada@example.org")
    Message.objects.create(contact=ada, channel="sms", direction="inbound", from_address="+1", to_address="+2",
                           body="Where is my parcel?", occurred_at="2026-11-20T10:00:00Z")  # fmt: skip
    document = "<!doctype html><html><body><h1>Parcel</h1></body></html>"
    openai_fake.script(Reply(content=f"```html\n{document}\n```"))

    task = run(django_capture_on_commit_callbacks, {"prompt": "Write an update", "format": "html"}, ada)

    assert task.status == "succeeded"
    request = openai_fake.requests[0]
    assert request["stream"] is True
    facts = request["messages"][1]["content"]
    assert "name: Ada" in facts and "sms inbound: Where is my parcel?" in facts
    artifact = Artifact.objects.get(id=task.result["artifact_id"])
    assert artifact.kind == "html" and artifact.contact_id == ada.id
    assert artifact.size == len(document.encode())


def test_timeout_fails_the_task_with_the_reason(openai_fake, settings, django_capture_on_commit_callbacks):
    settings.OPENAI_TIMEOUT_SECONDS = 0.3
    openai_fake.script(Reply(content="too late", delay=1.0))

    task = run(django_capture_on_commit_callbacks, {"prompt": "Summarise"})

    assert len(openai_fake.requests) == 1  # not retried
    assert (task.status, task.error_code) == ("failed", "llm_timeout")
    assert "did not answer" in task.error_message


def test_refusal_fails_the_task_with_the_reason(openai_fake, django_capture_on_commit_callbacks):
    openai_fake.script(Reply(refusal="I can't write that."))
    task = run(django_capture_on_commit_callbacks, {"prompt": "Write"})

    assert (task.status, task.error_code) == ("failed", "llm_refused")
    assert "I can't write that." in task.error_message
    assert not Artifact.objects.filter(task_id=task.id).exists()


def test_server_error_is_retried_then_fails(openai_fake, settings, django_capture_on_commit_callbacks):
    settings.TASK_MAX_ATTEMPTS = 2
    openai_fake.script(Reply(status=500), Reply(status=502))
    task = run(django_capture_on_commit_callbacks, {"prompt": "Write"})

    assert len(openai_fake.requests) == 2
    assert (task.status, task.error_code) == ("failed", "llm_unavailable")
