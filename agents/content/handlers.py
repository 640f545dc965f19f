"""The ``content.generate`` handler and its intake validator.

Payload::

    {"prompt": "…", "format": "summary" | "html"?, "title": "…"?,
     "inputs": {…}?, "max_tokens": 1..4000?}
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.serializers import ValidationError

from agents.content import services
from dossiers.models import Contact
from orchestrator.models import Task
from orchestrator.registry import handler, payload_schema, payload_validator


@handler("content.generate", channel="content", queue="content")
def generate_content(task: Task) -> None:
    services.content_generate(task=task)


@payload_validator("content.generate")
def validate_content_payload(payload: dict[str, Any], contact: Contact | None) -> None:
    errors: list[str] = []
    if not isinstance(payload.get("prompt"), str) or not payload["prompt"].strip():
        errors.append("'prompt' is required (a non-empty string).")
    if payload.get("format", "summary") not in services.FORMATS:
        errors.append(f"'format' must be one of {', '.join(services.FORMATS)}.")
    if not isinstance(payload.get("inputs", {}), dict):
        errors.append("'inputs' must be an object.")
    max_tokens = payload.get("max_tokens", 1)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 4000:
        errors.append("'max_tokens' must be an integer from 1 to 4000.")
    if errors:
        raise ValidationError({"payload": errors})


class ContentPayloadSerializer(serializers.Serializer):
    """``content.generate``: a prompt; the result is kept as an artifact (result.url, signed)."""

    prompt = serializers.CharField()
    format = serializers.ChoiceField(choices=sorted(services.FORMATS), required=False)
    inputs = serializers.DictField(required=False, help_text="Extra inputs for the prompt.")
    max_tokens = serializers.IntegerField(min_value=1, max_value=4000, required=False)


payload_schema("content.generate", ContentPayloadSerializer,
               example={"prompt": "Summarise the last week", "format": "summary"})  # fmt: skip
