"""Email services: render the body and build the outgoing message of an ``email.send``
task, and the recipient's consent (unsubscribe link, provider reports).

The send pipeline is ``agents.email.sending``; delivery events are ``agents.email.tracking``.
Keyword-only and typed; the handler and the views only call these.
"""

from __future__ import annotations

import logging
import mimetypes
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.template import Context, TemplateDoesNotExist, engines
from django.template.loader import render_to_string

from agents.content.text import artifact_get, artifact_read, html_to_text
from agents.email.providers import (
    Attachment,
    OutgoingEmail,
)
from dossiers.models import Artifact, ConsentStatus, Contact, Email
from dossiers.services import consent_set
from orchestrator.errors import PermanentError
from orchestrator.models import Task

log = logging.getLogger(__name__)

UNSUBSCRIBE_SALT = "email-unsubscribe"


# --- Building the message -------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    text: str
    html: str


def render_body(*, payload: dict[str, Any], contact: Contact | None) -> Body:
    """Text and HTML: given, rendered from ``templates/email/<template>.{html,txt}``, or
    taken from a generated artifact; HTML falls back to ``email/default.html``."""
    context = {**payload.get("context", {}), "contact": contact, "subject": payload.get("subject", "")}
    text, html = payload.get("text", ""), payload.get("html", "")
    if payload.get("template"):
        name = payload["template"]
        html = html or render_to_string(f"email/{name}.html", context)
        text = text or text_template(f"email/{name}.txt", context) or html_to_text(html)
    artifact_id, mode = payload.get("artifact"), payload.get("artifact_as", "body")
    if artifact_id and mode == "body":
        artifact = artifact_get(artifact_id=artifact_id)
        content = artifact_read(artifact=artifact).decode("utf-8", errors="replace")
        if artifact.content_type.startswith("text/html"):
            html, text = html or content, text or html_to_text(content)
        else:
            text = f"{text}\n\n{content}".strip()
    if artifact_id and mode == "link":
        from agents.content.links import artifact_url

        url = artifact_url(artifact_id=artifact_id)
        context["artifact_url"] = url
        text = f"{text}\n\n{url}".strip()
    if not html:
        html = render_to_string("email/default.html", {**context, "text": text})
    return Body(text=text or html_to_text(html), html=html)


def text_template(name: str, context: dict[str, Any]) -> str:
    """A ``.txt`` template rendered WITHOUT HTML escaping (render_to_string would turn a
    recipient's ``<`` or ``&`` into ``&lt;`` / ``&amp;`` in the plain-text part); "" when there
    is none."""
    try:
        template = engines["django"].engine.get_template(name)
    except TemplateDoesNotExist:
        return ""
    return template.render(Context(context, autoescape=False))


def attachments_for(*, payload: dict[str, Any]) -> tuple[Attachment, ...]:
    """Attachments listed by artifact id (or {artifact, filename}); the artifact_as=attachment
    form of ``artifact`` too. One query for all of them."""
    refs = [item if isinstance(item, dict) else {"artifact": item} for item in payload.get("attachments", [])]
    if payload.get("artifact") and payload.get("artifact_as") == "attachment":
        refs.append({"artifact": payload["artifact"]})
    wanted = [(_artifact_id(ref.get("artifact")), ref.get("filename", "")) for ref in refs]
    rows = Artifact.objects.in_bulk([a for a, _ in wanted])
    missing = [str(a) for a, _ in wanted if a not in rows]
    if missing:
        raise PermanentError(f"artifact {', '.join(missing)} no longer exists", code="artifact_missing")
    return tuple(
        Attachment(
            filename=name or default_filename(rows[a]),
            content=artifact_read(artifact=rows[a]),
            content_type=rows[a].content_type.split(";")[0],
        )
        for a, name in wanted
    )


def _artifact_id(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise PermanentError(f"{value!r} is not an artifact id", code="bad_payload") from None


def default_filename(artifact: Artifact) -> str:
    ext = mimetypes.guess_extension(artifact.content_type.split(";")[0]) or ".bin"
    return f"{artifact.kind}-{str(artifact.id)[:8]}{ext}"


def unsubscribe_url(*, email_id: int) -> str:
    token = signing.Signer(salt=UNSUBSCRIBE_SALT).sign(str(email_id))
    return f"{settings.PUBLIC_BASE_URL}/email/unsubscribe/{token}/"


def outgoing_for(*, email: Email, task: Task) -> OutgoingEmail:
    html = artifact_read(artifact=email.html).decode() if email.html_id else ""
    return OutgoingEmail(
        task_id=str(task.id), email_id=email.id, from_email=email.from_address, to=email.to_address,
        subject=email.subject, text=email.text_body, html=html, reply_to=task.payload.get("reply_to", ""),
        list_unsubscribe=f"<{unsubscribe_url(email_id=email.id)}>",
        attachments=attachments_for(payload=task.payload), categories=(task.type,),
    )  # fmt: skip


# --- Consent from the recipient --------------------------------------------------------


def contact_ids_for(*, email: Email) -> list[Any]:
    """The email's contact, or (an address typed into a payload) the contacts with its address."""
    if email.contact_id:
        return [email.contact_id]
    return list(Contact.objects.filter(email__iexact=email.to_address).values_list("id", flat=True))


def email_opt_out(*, email: Email, detail: str) -> None:
    """Opt the email's contact(s) out of email (an unsubscribe link, a report from the provider)."""
    for contact_id in contact_ids_for(email=email):
        consent_set(
            contact_id=contact_id, channel="email", status=ConsentStatus.OPTED_OUT, source="webhook",
            detail=detail, actor="sendgrid",
        )  # fmt: skip


def email_unsubscribe(*, token: str) -> bool:
    """One-click unsubscribe (RFC 8058) from the List-Unsubscribe URL. False when the token is bad."""
    try:
        email_id = int(signing.Signer(salt=UNSUBSCRIBE_SALT).unsign(token))
    except (signing.BadSignature, ValueError):
        return False
    email = Email.objects.filter(id=email_id).first()
    if email is None:
        return False
    email_opt_out(email=email, detail="sendgrid list_unsubscribe")
    return True
