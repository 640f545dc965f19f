"""The text of an outbound message: a literal body, a template, or a prompt.

Template placeholders are ``{{ var }}``; the values come from the task's ``variables``
first, then the contact's fields. A missing value is an error (400 at intake), never a
blank in the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agents.messaging.models import MessageTemplate

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class BodyError(ValueError):
    """The body cannot be built; the message says why (shown in a 400 or as the failure reason)."""


@dataclass(frozen=True)
class Rendered:
    text: str
    content_sid: str = ""
    content_variables: dict[str, str] = field(default_factory=dict)
    template: str = ""


def contact_fields(contact: Any) -> dict[str, str]:
    if contact is None:
        return {}
    values = {"name": contact.name, "phone": contact.phone, "email": contact.email, "locale": contact.locale}
    if contact.name:
        values["first_name"] = contact.name.split()[0]
    return {k: v for k, v in values.items() if v}


def find_template(*, name: str, channel: str, locale: str) -> MessageTemplate:
    """The template in the locale asked for, else its language, else English."""
    candidates = [locale, locale.split("-")[0].split("_")[0], "en"]
    rows = {
        t.locale: t for t in MessageTemplate.objects.filter(name=name, channel=channel, locale__in=candidates)
    }
    for candidate in candidates:
        if candidate in rows:
            return rows[candidate]
    raise BodyError(f"no {channel} template named {name!r} (locale {locale!r} or a fallback)")


def _fill(text: str, values: dict[str, Any]) -> str:
    missing = sorted({m for m in PLACEHOLDER.findall(text) if values.get(m) in (None, "")})
    if missing:
        raise BodyError(f"missing template variable(s): {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def render_template(*, template: MessageTemplate, variables: dict[str, Any], contact: Any) -> Rendered:
    values = {**contact_fields(contact), **(variables or {})}
    content_variables = {}
    if template.content_sid:
        missing = sorted(v for v in template.content_variables.values() if values.get(v) in (None, ""))
        if missing:
            raise BodyError(f"missing template variable(s): {', '.join(missing)}")
        content_variables = {slot: str(values[var]) for slot, var in template.content_variables.items()}
    text = _fill(template.body, values) if template.body else f"[template {template.name}]"
    return Rendered(text, template.content_sid, content_variables, template.name)


def build(*, payload: dict[str, Any], channel: str, contact: Any) -> Rendered:
    """The message for a (validated) payload. Raises BodyError."""
    if payload.get("body"):
        return Rendered(payload["body"])
    if payload.get("template"):
        locale = payload.get("locale") or getattr(contact, "locale", "") or "en"
        template = find_template(name=payload["template"], channel=channel, locale=locale)
        return render_template(template=template, variables=payload.get("variables") or {}, contact=contact)
    if payload.get("prompt"):
        from agents.content.generator import generate_text

        context = {**contact_fields(contact), **(payload.get("variables") or {})}
        return Rendered(generate_text(prompt=payload["prompt"], context=context))
    raise BodyError("give one of body, template or prompt")
