"""Content services: write a summary or an HTML document for a task, from its inputs and
the contact's dossier, and keep it as an artifact with a signed, expiring URL."""

from __future__ import annotations

import re
from typing import Any

from django.template.loader import render_to_string

from agents.content.generator import generate_text
from agents.content.links import artifact_url, artifact_url_expires_at
from dossiers.models import Artifact, Contact, Email, Message
from dossiers.services import artifact_store
from orchestrator.errors import PermanentError, TransientError
from orchestrator.models import Task
from orchestrator.services import task_transition
from orchestrator.states import TaskStatus

FORMATS = {
    # format: (artifact kind, content type, system prompt, max tokens)
    "summary": (
        "text",
        "text/plain; charset=utf-8",
        "You write short, factual summaries in plain text. No markdown.",
        400,
    ),
    "html": (
        "html",
        "text/html; charset=utf-8",
        "You write one complete, self-contained HTML5 document: inline CSS only, no scripts, "
        "no external resources. Answer with the HTML and nothing else.",
        2000,
    ),
}
RECENT_MESSAGES = 10
RECENT_EMAILS = 5
_FENCE = re.compile(r"^```(?:html)?\s*\n(.*?)\n```\s*$", re.DOTALL)


def dossier_context(*, contact: Contact | None) -> dict[str, Any]:
    """What the model may know about the recipient: name, locale and recent exchanges
    (two queries, newest first, bodies cut short)."""
    if contact is None:
        return {}
    messages = Message.objects.filter(contact=contact).order_by("-occurred_at")[:RECENT_MESSAGES]
    emails = Email.objects.filter(contact=contact).order_by("-occurred_at")[:RECENT_EMAILS]
    context: dict[str, Any] = {"name": contact.name, "locale": contact.locale}
    lines = [f"{m.occurred_at:%Y-%m-%d} {m.channel} {m.direction}: {m.body[:300]}" for m in messages]
    lines += [
        f"{e.occurred_at:%Y-%m-%d} email {e.direction}: {e.subject} — {e.text_body[:300]}" for e in emails
    ]
    if lines:
        context["recent exchanges"] = "\n" + "\n".join(lines)
    return context


def content_generate(*, task: Task) -> Artifact:
    """Generate (or, on a retry after a crash, find) the task's artifact and finish the task."""
    payload = task.payload
    fmt = payload.get("format", "summary")
    if fmt not in FORMATS or not str(payload.get("prompt", "")).strip():
        # Tasks made inside the platform skip intake validation: say what is wrong.
        raise PermanentError("the payload needs a 'prompt' and a known 'format'", code="bad_payload")
    kind, content_type, system, max_tokens = FORMATS[fmt]
    artifact = Artifact.objects.filter(task_id=task.id, kind=kind).first()
    if artifact is None:
        context = {**dossier_context(contact=task.contact), **payload.get("inputs", {})}
        text = _generate(prompt=payload["prompt"], context=context, system=system,
                         max_tokens=int(payload.get("max_tokens", max_tokens)), stream=fmt == "html")  # fmt: skip
        body = _as_html(text, title=payload.get("title", "")) if fmt == "html" else text
        artifact = artifact_store(
            content=body.encode(), content_type=content_type, kind=kind, contact_id=task.contact_id,
            task_id=task.id, correlation_id=task.correlation_id,
        )  # fmt: skip
    result = {
        "artifact_id": str(artifact.id),
        "url": artifact_url(artifact_id=artifact.id),
        "url_expires_at": artifact_url_expires_at().isoformat(),
        "format": fmt,
        "size": artifact.size,
    }
    task_transition(task_id=task.id, to=TaskStatus.SUCCEEDED, actor="agent:content", result=result,
                    details={"artifact_id": str(artifact.id)})  # fmt: skip
    return artifact


def _generate(**kwargs: Any) -> str:
    try:
        return generate_text(**kwargs)
    except TransientError as exc:
        if exc.code == "llm_timeout":
            # A document the model could not write within the timeout will not fit the
            # next time either: fail with the reason rather than pay for it again.
            raise PermanentError(exc.message, code=exc.code) from exc
        raise


def _as_html(text: str, *, title: str) -> str:
    """The model's HTML (code fences removed), or plain text laid out in our template."""
    match = _FENCE.match(text.strip())
    text = match.group(1) if match else text.strip()
    if text.lower().startswith(("<!doctype", "<html")):
        return text
    return render_to_string("content/document.html", {"title": title, "text": text})
