"""Text generation for the content agent and for message bodies written from a prompt.

Production: an OpenAI-compatible chat API through the ``openai`` SDK (base URL, model and
key from settings, so any compatible server works). Test mode: a deterministic generator,
so the same prompt always gives the same text, offline.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings

from orchestrator.errors import PermanentError, TransientError


def generate_text(
    *,
    prompt: str,
    context: dict[str, Any] | None = None,
    system: str = "",
    max_tokens: int = 400,
    stream: bool = False,
) -> str:
    """The model's answer to ``prompt``. ``stream=True`` reads it as server-sent events
    (long documents: the connection never sits idle long enough to hit a proxy timeout).

    Raises TransientError (429 with ``retry_after``, 5xx, no answer: code llm_timeout) or
    PermanentError (the model refused, was filtered, or returned nothing).
    """
    if settings.CONTENT_SIMULATED:
        return _deterministic(prompt, context or {})
    return _openai(prompt=prompt, context=context or {}, system=system, max_tokens=max_tokens, stream=stream)


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


def _messages(prompt: str, context: dict[str, Any], system: str) -> list[dict[str, str]]:
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    if context:
        facts = "\n".join(f"{k}: {v}" for k, v in context.items())
        messages.append({"role": "system", "content": f"Facts about the recipient:\n{facts}"})
    messages.append({"role": "user", "content": prompt})
    return messages


def _openai(
    *, prompt: str, context: dict[str, Any], system: str, max_tokens: int, stream: bool = False
) -> str:
    import openai

    request = {
        "model": settings.OPENAI_MODEL,
        "messages": _messages(prompt, context, system),
        "max_tokens": max_tokens,
    }
    try:
        client = openai_client()
        if stream:
            text, refusal, finish = _read_stream(client.chat.completions.create(**request, stream=True))
        else:
            choice = client.chat.completions.create(**request).choices[0]
            text, refusal, finish = choice.message.content or "", choice.message.refusal, choice.finish_reason
    except openai.RateLimitError as exc:
        raise TransientError(
            "the content model is rate limited (429)", code="llm_rate_limited", retry_after=_retry_after(exc)
        ) from exc
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
    if refusal:
        raise PermanentError(f"the content model refused: {refusal[:300]}", code="llm_refused")
    if finish == "content_filter":
        raise PermanentError("the content model's output was filtered (content_filter)", code="llm_filtered")
    text = text.strip()
    if not text:
        raise PermanentError("the content model returned no text", code="llm_empty")
    return text


def _read_stream(chunks) -> tuple[str, str, str | None]:
    parts: list[str] = []
    refusal: list[str] = []
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            refusal.append(getattr(choice.delta, "refusal", None) or "")
            finish = choice.finish_reason or finish
    return "".join(parts), "".join(refusal), finish


def _retry_after(exc: Any) -> float | None:
    """Seconds from the server's Retry-After (or retry-after-ms) header, when it sent one."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None
