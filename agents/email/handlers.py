"""The ``email.send`` handler and its intake validator.

Payload::

    {"subject": "…", "to": "a@example.com"?,            # default: the contact's email
     "text": "…"?, "html": "…"?, "template": "welcome"?, "context": {…}?,
     "reply_to": "…"?, "attachments": ["<artifact id>" | {"artifact": id, "filename": "…"}]?,
     "artifact": "<artifact id>"?, "artifact_as": "body" | "link" | "attachment"?}
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from rest_framework import serializers
from rest_framework.serializers import ValidationError

from agents.email import sending
from dossiers.models import Artifact, Contact
from orchestrator.models import Task
from orchestrator.registry import handler, payload_schema, payload_validator

ARTIFACT_MODES = ("body", "link", "attachment")


@handler("email.send", channel="email", queue="email")
def send_email(task: Task) -> None:
    sending.email_send(task=task)


@payload_validator("email.send")
def validate_email_payload(payload: dict[str, Any], contact: Contact | None) -> dict[str, Any]:
    errors: list[str] = []
    if not isinstance(payload.get("subject"), str) or not payload["subject"].strip():
        errors.append("'subject' is required (a non-empty string).")
    to = payload.get("to") or (contact.email if contact else "")
    for field, value in (("to", to), ("reply_to", payload.get("reply_to"))):
        if value and not _is_email(value):
            errors.append(f"'{field}' is not an email address.")
    if not to:
        errors.append("'to' is required when the task has no contact with an email address.")
    if not any(payload.get(k) for k in ("text", "html", "template", "artifact")):
        errors.append("give the body: 'text', 'html', 'template' or 'artifact'.")
    if payload.get("template"):
        errors += _template_errors(str(payload["template"]))
    if payload.get("artifact_as", "body") not in ARTIFACT_MODES:
        errors.append(f"'artifact_as' must be one of {', '.join(ARTIFACT_MODES)}.")
    if not isinstance(payload.get("context", {}), dict):
        errors.append("'context' must be an object.")
    errors += _artifact_errors(payload)
    if errors:
        raise ValidationError({"payload": errors})
    return payload


def _is_email(value: Any) -> bool:
    try:
        validate_email(value)
    except (DjangoValidationError, TypeError):
        return False
    return True


def _template_errors(name: str) -> list[str]:
    if "/" in name or ".." in name:
        return ["'template' is a name under templates/email/, without a path."]
    try:
        get_template(f"email/{name}.html")
    except TemplateDoesNotExist:
        return [f"no email template 'email/{name}.html'."]
    return []


def _artifact_errors(payload: dict[str, Any]) -> list[str]:
    refs: list[Any] = []
    attachments = payload.get("attachments", [])
    if not isinstance(attachments, list):
        return ["'attachments' must be a list of artifact ids."]
    for item in attachments:
        refs.append(item.get("artifact") if isinstance(item, dict) else item)
    if payload.get("artifact"):
        refs.append(payload["artifact"])
    ids = []
    for ref in refs:
        try:
            ids.append(uuid.UUID(str(ref)))
        except ValueError:
            return [f"{ref!r} is not an artifact id."]
    missing = set(ids) - set(Artifact.objects.filter(id__in=ids).values_list("id", flat=True))
    return [f"no artifact {m}." for m in sorted(map(str, missing))]


class EmailPayloadSerializer(serializers.Serializer):
    """``email.send``: a subject and a body (text and/or html, a template, or an artifact)."""

    to = serializers.CharField(required=False, help_text="An email address; defaults to the contact's.")
    subject = serializers.CharField()
    text = serializers.CharField(required=False, allow_blank=True)
    html = serializers.CharField(required=False, allow_blank=True)
    template = serializers.CharField(required=False, allow_blank=True, help_text="An email template name.")
    context = serializers.DictField(required=False, help_text="Template variables.")
    reply_to = serializers.CharField(required=False, allow_blank=True)
    artifact = serializers.CharField(required=False, allow_blank=True, help_text="An artifact id.")
    artifact_as = serializers.ChoiceField(choices=ARTIFACT_MODES, required=False)
    attachments = serializers.ListField(child=serializers.JSONField(), required=False,
                                        help_text="Artifact ids to attach.")  # fmt: skip


payload_schema("email.send", EmailPayloadSerializer,
               example={"to": "ada@example.com", "subject": "Order 1042", "text": "It shipped."})  # fmt: skip
