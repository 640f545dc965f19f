"""Intake checks for sms.send and whatsapp.send: a bad payload is a 400 that says why."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.serializers import CharField, DictField, ListField, Serializer, ValidationError

from agents.messaging import bodies, segments
from dossiers.services import InvalidPhoneNumber, normalize_phone
from orchestrator.registry import payload_schema, payload_validator

ALLOWED = {"to", "body", "template", "prompt", "variables", "locale", "media_url"}


def _error(message: str) -> ValidationError:
    return ValidationError({"payload": [message]})


def _recipient(payload: dict[str, Any], contact: Any, channel: str) -> str:
    raw = payload.get("to") or (getattr(contact, "whatsapp", "") if channel == "whatsapp" else "")
    raw = raw or getattr(contact, "phone", "")
    if not raw:
        raise _error("'to' is required (or give a contact with a phone number)")
    try:
        return normalize_phone(str(raw))
    except InvalidPhoneNumber as exc:
        raise ValidationError({"payload": {"to": [str(exc)]}}, code=exc.code) from None


def _check_length(text: str, channel: str) -> dict[str, Any]:
    if channel == "whatsapp":
        if len(text) > settings.WHATSAPP_MAX_BODY_CHARS:
            raise _error(
                f"the WhatsApp body is {len(text)} characters; the limit is {settings.WHATSAPP_MAX_BODY_CHARS}"
            )
        return {}
    info = segments.analyse(text)
    if info.segments > settings.SMS_MAX_SEGMENTS:
        raise _error(
            f"the SMS body needs {info.segments} {info.encoding} segments; the limit is "
            f"{settings.SMS_MAX_SEGMENTS} (SMS_MAX_SEGMENTS)"
            + (
                " — a character outside GSM-7 made it UCS-2 (70 per segment)"
                if info.encoding == segments.UCS2
                else ""
            )
        )
    return {"encoding": info.encoding, "segments": info.segments}


def validate_message(payload: dict[str, Any], contact: Any, channel: str) -> dict[str, Any]:
    unknown = sorted(set(payload) - ALLOWED)
    if unknown:
        raise _error(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ALLOWED))}")
    given = [k for k in ("body", "template", "prompt") if payload.get(k)]
    if len(given) != 1:
        raise _error(
            "give exactly one of body, template or prompt" + (f" (got {', '.join(given)})" if given else "")
        )
    for key in ("body", "template", "prompt", "locale"):
        if key in payload and not isinstance(payload[key], str):
            raise _error(f"'{key}' must be a string")
    if not isinstance(payload.get("variables", {}), dict):
        raise _error("'variables' must be an object")
    media = payload.get("media_url", [])
    media = [media] if isinstance(media, str) else media
    if not isinstance(media, list) or not all(
        isinstance(u, str) and u.startswith(("http://", "https://")) for u in media
    ):
        raise _error("'media_url' must be a list of http(s) URLs")
    normalised = {**payload, "to": _recipient(payload, contact, channel)}
    if media:
        normalised["media_url"] = media
    if given[0] == "prompt":
        return normalised  # written by the content agent at send time; its length is checked then
    try:
        rendered = bodies.build(payload=payload, channel=channel, contact=contact)
    except bodies.BodyError as exc:
        raise _error(str(exc)) from None
    if not rendered.content_sid:
        normalised.update(_check_length(rendered.text, channel))
    return normalised


@payload_validator("sms.send")
def validate_sms(payload: dict[str, Any], contact: Any) -> dict[str, Any]:
    return validate_message(payload, contact, "sms")


@payload_validator("whatsapp.send")
def validate_whatsapp(payload: dict[str, Any], contact: Any) -> dict[str, Any]:
    return validate_message(payload, contact, "whatsapp")


# --- The documented payload (OpenAPI component, also checked at intake) ------------------------


class MessagePayloadSerializer(Serializer):
    """``sms.send`` / ``whatsapp.send``: exactly one of ``body``, ``template`` or ``prompt``."""

    to = CharField(required=False, help_text="E.164 (+14155550123; whatsapp:+… for WhatsApp); "
                   "defaults to the task contact's number.")  # fmt: skip
    body = CharField(required=False, allow_blank=True, help_text="The text.")
    template = CharField(required=False, allow_blank=True, help_text="A MessageTemplate name (an approved "
                         "WhatsApp template may be sent outside the 24-hour window).")  # fmt: skip
    variables = DictField(
        required=False, help_text="Template variables (the contact's fields fill the rest)."
    )
    prompt = CharField(
        required=False, allow_blank=True, help_text="Generate the text with the content agent."
    )
    locale = CharField(
        required=False, allow_blank=True, help_text="The template locale (default the contact's)."
    )
    media_url = ListField(
        child=CharField(), required=False, help_text="http(s) URLs of media (MMS/WhatsApp)."
    )


payload_schema(
    "sms.send", MessagePayloadSerializer, example={"to": "+14155550123", "body": "Your order shipped"}
)
payload_schema("whatsapp.send", MessagePayloadSerializer, example={
    "to": "whatsapp:+14155550101", "template": "order_shipped", "variables": {"name": "Ada", "order": "1042"}})  # fmt: skip
