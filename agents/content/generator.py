"""Text generation for the content agent and for message bodies written from a prompt.

Production: an OpenAI-compatible chat API through the ``openai`` SDK (base URL, model and
key from settings, so any compatible server works). Test mode: a deterministic generator,
so the same prompt always gives the same text, offline.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings

from agents.common.errors import PermanentError, TransientError


def generate_text(
    *, prompt: str, context: dict[str, Any] | None = None, system: str = "", max_tokens: int = 400
) -> str:
    if settings.TEST_MODE:
        return _deterministic(prompt, context or {})
    return _openai(prompt=prompt, context=context or {}, system=system, max_tokens=max_tokens)


def _deterministic(prompt: str, context: dict[str, Any]) -> str:
    name = context.get("name") or "there"
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return f"Hi {name}, {prompt.strip().rstrip('.')}. [generated {tag}]"


def openai_client():
    import openai

    return openai.OpenAI(
        api_key=settings.OPENAI_API_KEY,
        base_url=settings.OPENAI_BASE_URL or None,
        timeout=settings.OPENAI_TIMEOUT_SECONDS,
        max_retries=0,  # retries are the orchestrator's job (backoff, attempt counter)
    )


def _openai(*, prompt: str, context: dict[str, Any], system: str, max_tokens: int) -> str:
    import openai

    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    if context:
        facts = "\n".join(f"{k}: {v}" for k, v in context.items())
        messages.append({"role": "system", "content": f"Facts about the recipient:\n{facts}"})
    messages.append({"role": "user", "content": prompt})
    try:
        response = openai_client().chat.completions.create(
            model=settings.OPENAI_MODEL, messages=messages, max_tokens=max_tokens
        )
    except openai.RateLimitError as exc:
        raise TransientError("the content model is rate limited (429)", code="llm_rate_limited") from exc
    except (openai.APITimeoutError, openai.APIConnectionError) as exc:
        raise TransientError(
            f"the content model did not answer: {type(exc).__name__}", code="llm_timeout"
        ) from exc
    except openai.InternalServerError as exc:
        raise TransientError(
            f"the content model failed: HTTP {exc.status_code}", code="llm_unavailable"
        ) from exc
    except openai.APIStatusError as exc:
        raise PermanentError(
            f"the content model refused: HTTP {exc.status_code}", code="llm_refused"
        ) from exc
    text = (response.choices[0].message.content or "").strip()
    if not text:
        raise PermanentError("the content model returned no text", code="llm_empty")
    return text
