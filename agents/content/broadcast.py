"""The content agent's side of broadcasts: a body written from a prompt, ONCE per broadcast.

``content.write_template(prompt, channel)`` asks the model (test mode: the deterministic
generator) for one text with ``{{ name }}``-style placeholders that every recipient's variables
fill in; a broadcast to 100,000 recipients costs one model call, not 100,000.
"""

from __future__ import annotations

from agents.content.generator import generate_text
from orchestrator.registry import hook

SYSTEM = (
    "You write one {channel} message sent to many people. Write the message only. Where the "
    "recipient's name belongs, write {{{{ name }}}} exactly; use no other placeholder."
)
MAX_TOKENS = {"sms": 120, "whatsapp": 200, "email": 600}


@hook("content.write_template")
def write_template(*, prompt: str, channel: str) -> str:
    """The body template for ``prompt``; raises the generator's Transient/PermanentError."""
    text = generate_text(
        prompt=prompt, context={"name": "{{ name }}"}, system=SYSTEM.format(channel=channel),
        max_tokens=MAX_TOKENS.get(channel, 400),
    )  # fmt: skip
    return text.strip()
