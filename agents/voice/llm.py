"""Streaming language models for the voice agent.

Production: an OpenAI-compatible chat API through the ``openai`` SDK (``AsyncOpenAI``,
streamed chat completions with the ``end_call`` and ``transfer_to_human`` tools).
Test mode without OPENAI_BASE_URL: a deterministic local generator that streams tokens
the same way, offline. Both yield ``TextDelta`` and ``ToolCall`` events.
"""

from __future__ import annotations

import asyncio
import json
import re
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "end_call",
            "description": "Hang up politely once the conversation is over or the callee asks to stop.",
            "parameters": {
                "type": "object",
                "properties": {"reason": {"type": "string", "description": "Why the call ends."}},
                "required": [],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "transfer_to_human",
            "description": "Hand the callee to a human operator when they ask for one or you cannot help.",
            "parameters": {
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "description": "Why a human is needed."},
                    "summary": {"type": "string", "description": "What the operator should know."},
                },
                "required": ["reason"],
            },
        },
    },
]


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


class LLMError(Exception):
    """The model failed (refused, returned garbage, or the local generator was told to)."""


class StreamingLLM(Protocol):
    def stream(self, messages: list[dict[str, Any]]) -> AsyncIterator[TextDelta | ToolCall]: ...


def get_llm() -> StreamingLLM:
    # Test mode talks to a real OpenAI-compatible server only when one is named (the
    # tests' local fake); otherwise it stays offline with the deterministic generator.
    if settings.TEST_MODE and not settings.OPENAI_BASE_URL:
        return DeterministicLLM()
    return OpenAIStreamingLLM()


# --- OpenAI-compatible -------------------------------------------------------------------

_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def async_openai_client():
    """One client (and connection pool) per event loop: httpx pools are bound to a loop."""
    import openai

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = openai.AsyncOpenAI(
            api_key=settings.OPENAI_API_KEY or "not-needed",
            base_url=settings.OPENAI_BASE_URL or None,
            timeout=settings.OPENAI_TIMEOUT_SECONDS,
            max_retries=0,  # a caller is waiting: apologise instead of retrying
        )
        _clients[loop] = client
    return client


class OpenAIStreamingLLM:
    async def stream(self, messages: list[dict[str, Any]]) -> AsyncIterator[TextDelta | ToolCall]:
        from openai import AsyncStream

        # The same request chat.completions.create(stream=True) sends, with the body built
        # here and the chunks kept as the SDK's decoded JSON (dicts): the SDK's parameter
        # transform walks every message (~0.1 ms each, and a voice turn resends the whole
        # conversation) and building a pydantic model per chunk costs ~0.25 ms; together
        # that was most of a turn's CPU. Auth, HTTP, error mapping and SSE decoding are
        # still the SDK's own.
        stream = await async_openai_client().post(
            "/chat/completions",
            body={"model": settings.OPENAI_MODEL, "messages": messages, "tools": TOOLS, "stream": True},
            options={"security": {"bearer_auth": True}},
            cast_to=object,
            stream=True,
            stream_cls=AsyncStream[object],
        )
        calls: dict[int, dict[str, str]] = {}
        async for chunk in stream:
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield TextDelta(delta["content"])
                for part in delta.get("tool_calls") or ():
                    # Tool calls arrive in pieces keyed by index; arguments are JSON text.
                    slot = calls.setdefault(part.get("index", 0), {"name": "", "arguments": ""})
                    function = part.get("function") or {}
                    slot["name"] += function.get("name") or ""
                    slot["arguments"] += function.get("arguments") or ""
        for slot in calls.values():
            try:
                arguments = json.loads(slot["arguments"] or "{}")
            except json.JSONDecodeError as exc:
                raise LLMError(f"tool call {slot['name']!r} had invalid JSON arguments") from exc
            yield ToolCall(slot["name"], arguments if isinstance(arguments, dict) else {})


# --- Deterministic (test mode) -----------------------------------------------------------

GOAL_LINE = re.compile(r"^Your goal on this call: (.+)$", re.MULTILINE)


class DeterministicLLM:
    """Same input, same tokens. Says goodbye (``end_call``) when the callee does, hands off
    when a person is asked for, and fails on purpose when told to ``simulate llm failure``."""

    async def stream(self, messages: list[dict[str, Any]]) -> AsyncIterator[TextDelta | ToolCall]:
        said = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        lowered = said.lower()
        tool = None
        if "simulate llm failure" in lowered:
            raise LLMError("the local generator was asked to fail")
        if re.search(r"\b(good)?bye\b", lowered):
            reply, tool = (
                "Thank you for your time. Goodbye!",
                ToolCall("end_call", {"reason": "the callee said goodbye"}),
            )
        elif re.search(r"\b(human|person|operator)\b", lowered):
            reply = "Of course, let me connect you with a colleague."
            tool = ToolCall(
                "transfer_to_human", {"reason": "the callee asked for a person", "summary": said[:200]}
            )
        else:
            system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
            goal = GOAL_LINE.search(system)
            about = goal.group(1).rstrip(".") if goal else "a quick follow-up"
            reply = f"I hear you: {said.strip().rstrip('.?!')}. I am calling about {about}. Does that work for you?"
        words = reply.split(" ")
        for index, word in enumerate(words):
            await asyncio.sleep(0)  # stream like a network would: one token per loop turn
            yield TextDelta(word if index == len(words) - 1 else word + " ")
        if tool is not None:
            yield tool
