"""Bodies with ``{{ variable }}`` placeholders, filled from a recipient's variables.

The same placeholder syntax as the messaging agent's templates (agents/messaging/bodies.py),
kept here because broadcasts may not import an agent; a missing variable is an error, never
an empty gap in a message that reached a customer.
"""

from __future__ import annotations

import re
from typing import Any

from django.utils.html import escape

PLACEHOLDER = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}")


class RenderError(ValueError):
    pass


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def render(text: str, variables: dict[str, Any], *, html: bool = False) -> str:
    """Fill the placeholders (``html``: each value HTML-escaped, for an email's HTML part)."""
    missing = sorted({m for m in PLACEHOLDER.findall(text) if variables.get(m) in (None, "")})
    if missing:
        raise RenderError(f"missing variable(s): {', '.join(missing)}")
    fill = (lambda v: escape(str(v))) if html else str
    return PLACEHOLDER.sub(lambda m: fill(variables[m.group(1)]), text)
