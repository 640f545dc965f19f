"""The agent's side of a call: one ``Conversation`` per ConversationRelay session.

It receives the caller's messages (``setup``, ``prompt``, ``interrupt``, ``dtmf``, ``error``),
streams the model's answer back as ``text`` tokens (then an empty token with ``last: true``),
runs the model's tools (``end_call``, ``transfer_to_human`` → an ``end`` message), enforces
the maximum duration, and apologises and ends the call when the model fails.

Transcript turns are written by ``TurnRecorder`` in the background, in order, so the
database and the live-view pushes never sit between a prompt and the first token.
The ``<Gather>`` mode drives the same class one turn at a time (``gather_turn``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from agents.voice import services
from agents.voice.llm import StreamingLLM, TextDelta, ToolCall, get_llm
from dossiers.models import TranscriptTurn
from orchestrator.models import Task

log = logging.getLogger(__name__)

APOLOGY = "I'm sorry, I'm having trouble on my side. Someone will get back to you. Goodbye."
TIME_UP = "I'm sorry, we have reached the time limit for this call. Goodbye."
RECORDER_FLUSH_SECONDS = 5.0

Send = Callable[[dict[str, Any]], Awaitable[None]]
# Set by bench/voice_turn.py to collect the platform's own latencies: (name, seconds).
TIMING_HOOK: Callable[[str, float], None] | None = None


class ConnectionGone(Exception):
    """The websocket closed while we were sending: the call is over, nobody to apologise to."""


def call_group(task_id: Any) -> str:
    """The Channels group of a call's live view (the same name as dashboard.live.call_group)."""
    return f"call.{task_id}"


@dataclass(frozen=True)
class CallContext:
    task_id: str
    call_id: int
    system_prompt: str
    greeting: str
    language: str
    voice: str
    max_duration_seconds: float


def system_prompt(payload: dict[str, Any], contact_name: str) -> str:
    persona = payload.get("persona") or "You are a friendly, concise phone agent."
    lines = [persona, "", f"Your goal on this call: {payload.get('goal') or 'a quick follow-up'}"]
    if contact_name:
        lines.append(f"You are speaking with {contact_name}.")
    lines.append(
        "You are on a phone call: answer in one or two short spoken sentences, no lists or markup. "
        "Call end_call when the conversation is over; call transfer_to_human when the callee asks for "
        "a person or you cannot help."
    )
    return "\n".join(lines)


def load_call_context(task_id: Any) -> CallContext | None:
    """The context of a call task, or None when there is no such call (sync; one query each)."""
    task = Task.objects.select_related("contact").filter(id=task_id, type="call.outbound").first()
    call = services.call_for_task(task_id=task_id) if task else None
    if task is None or call is None:
        return None
    payload = task.payload
    return CallContext(
        task_id=str(task.id),
        call_id=call.id,
        system_prompt=system_prompt(payload, task.contact.name if task.contact else ""),
        greeting=payload.get("greeting") or "",
        language=payload.get("language") or settings.VOICE_DEFAULT_LANGUAGE,
        voice=payload.get("voice") or settings.VOICE_DEFAULT_VOICE,
        max_duration_seconds=float(
            payload.get("max_duration_seconds") or settings.VOICE_MAX_DURATION_SECONDS
        ),
    )


# --- Transcript recorder --------------------------------------------------------------------


@dataclass
class Turn:
    sequence: int
    speaker: str
    text: str
    started_at: datetime
    interrupted: bool = False


class TurnRecorder:
    """Saves turns and end reasons in order, off the token path, and pushes each turn to
    the call's live-view group. Must be created inside the event loop."""

    def __init__(self, *, call_id: int, task_id: str, next_sequence: int) -> None:
        self.call_id = call_id
        self.task_id = task_id
        self.next_sequence = next_sequence
        self.queue: asyncio.Queue = asyncio.Queue()
        self.layer = get_channel_layer()
        self.worker = asyncio.create_task(self._run())

    def open_turn(self, speaker: str, text: str = "") -> Turn:
        turn = Turn(self.next_sequence, speaker, text, timezone.now())
        self.next_sequence += 1
        return turn

    def save(self, turn: Turn) -> None:
        self.queue.put_nowait(("turn", dataclasses.replace(turn)))

    def end_reason(self, reason: str) -> None:
        self.queue.put_nowait(("end_reason", reason))

    async def flush(self) -> None:
        """Wait until everything queued so far is written."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), RECORDER_FLUSH_SECONDS)

    async def close(self) -> None:
        await self.flush()
        self.worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.worker

    async def _run(self) -> None:
        while True:
            # Everything queued since the last write goes in one transaction (one thread hop).
            items = [await self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get_nowait())
            turns = [item for kind, item in items if kind == "turn"]
            end_reason = next((item for kind, item in items if kind == "end_reason"), "")
            try:
                await database_sync_to_async(services.transcript_write)(
                    call_id=self.call_id, end_reason=end_reason,
                    turns=[services.TurnData(t.sequence, t.speaker, t.text, t.started_at, t.interrupted) for t in turns],
                )  # fmt: skip
                for turn in turns:
                    await self._push(turn)
            except Exception:
                log.exception("transcript write for call task %s failed", self.task_id)
            finally:
                for _ in items:
                    self.queue.task_done()

    async def _push(self, turn: Turn) -> None:
        if self.layer is None:
            return
        data = {"task_id": self.task_id, "sequence": turn.sequence, "speaker": turn.speaker, "text": turn.text,
                "started_at": turn.started_at.isoformat(), "interrupted": turn.interrupted}  # fmt: skip
        # The shape dashboard.consumers.CallConsumer relays to the live call view.
        await self.layer.group_send(call_group(self.task_id), {"type": "call.turn", "turn": data})


# --- The conversation -------------------------------------------------------------------------


@dataclass
class _AgentTurn:
    turn: Turn
    message: dict[str, Any]


class Conversation:
    def __init__(self, *, context: CallContext, send: Send, recorder: TurnRecorder,
                 llm: StreamingLLM | None = None, history: list[TranscriptTurn] | None = None) -> None:  # fmt: skip
        self.context = context
        self.send = send
        self.recorder = recorder
        self.llm = llm or get_llm()
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": context.system_prompt}]
        for row in history or ():
            role = "user" if row.speaker == "caller" else "assistant" if row.speaker == "agent" else None
            if role:
                self.messages.append({"role": role, "content": row.text})
        self.response: asyncio.Task | None = None
        self.deadline: asyncio.Task | None = None
        self.last_agent: _AgentTurn | None = None
        self.ended = False
        self.call_sid = ""

    # --- incoming messages -----------------------------------------------------------------
    async def handle(self, message: dict[str, Any], received_at: float | None = None) -> None:
        kind = message.get("type")
        if kind == "setup":
            await self.on_setup(message)
        elif kind == "prompt":
            await self.on_prompt(
                str(message.get("voicePrompt", "")), received_at, final=message.get("last", True)
            )
        elif kind == "interrupt":
            await self.on_interrupt(str(message.get("utteranceUntilInterrupt", "")))
        elif kind == "dtmf":
            await self.on_prompt(f"[The callee pressed the key {message.get('digit', '')}]", received_at,
                                 speaker_text=f"DTMF {message.get('digit', '')}")  # fmt: skip
        elif kind == "error":
            log.warning(
                "ConversationRelay error on task %s: %s", self.context.task_id, message.get("description")
            )
            self.recorder.save(self.recorder.open_turn("system", f"error: {message.get('description', '')}"))
        else:
            log.info("ignored ConversationRelay message type %r", kind)

    async def on_setup(self, message: dict[str, Any]) -> None:
        self.call_sid = str(message.get("callSid", ""))
        if self.context.greeting and len(self.messages) == 1:
            # Twilio speaks the welcome greeting itself; the model must know it was said.
            self.messages.append({"role": "assistant", "content": self.context.greeting})
            self.recorder.save(self.recorder.open_turn("agent", self.context.greeting))
        if self.deadline is None:  # a repeated setup does not restart the clock
            self.deadline = asyncio.create_task(self._deadline(self.context.max_duration_seconds))

    async def on_prompt(self, text: str, received_at: float | None, *, final: bool = True,
                        speaker_text: str | None = None) -> None:  # fmt: skip
        if self.ended or not final or not text.strip():
            return  # partial prompts are not enabled; an empty prompt has nothing to answer
        await self._stop_response()
        self.messages.append({"role": "user", "content": text})
        self.response = asyncio.create_task(self._respond(received_at or time.perf_counter()))
        self.recorder.save(self.recorder.open_turn("caller", speaker_text or text))

    async def on_interrupt(self, heard: str) -> None:
        """The caller spoke over the agent: keep only what they actually heard."""
        await self._stop_response()
        agent = self.last_agent
        if agent is None:
            return
        agent.turn.text = heard
        agent.turn.interrupted = True
        agent.message["content"] = heard
        self.recorder.save(agent.turn)

    async def close(self) -> None:
        """The websocket closed (the call ended or the caller hung up)."""
        if not self.ended:
            self.ended = True
            self.recorder.end_reason("caller_hangup: the callee hung up")
        await self._stop_response()
        if self.deadline is not None:
            self.deadline.cancel()
        await self.recorder.close()

    async def wait_idle(self) -> None:
        if self.response is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.response

    # --- the answer --------------------------------------------------------------------------
    async def _respond(self, received_at: float) -> None:
        agent = _AgentTurn(self.recorder.open_turn("agent"), {"role": "assistant", "content": ""})
        self.messages.append(agent.message)
        self.last_agent = agent
        said: list[str] = []
        tool: ToolCall | None = None
        failure: Exception | None = None
        last_token_at = 0.0
        try:
            async with asyncio.timeout(settings.OPENAI_TIMEOUT_SECONDS) as budget:
                async for event in self.llm.stream(self.messages[:-1]):
                    # The budget is per chunk: a stalled stream fails, a long one does not.
                    budget.reschedule(asyncio.get_running_loop().time() + settings.OPENAI_TIMEOUT_SECONDS)
                    if isinstance(event, TextDelta):
                        said.append(event.text)
                        await self.send({"type": "text", "token": event.text, "last": False})
                        last_token_at = time.perf_counter()
                        if len(said) == 1 and TIMING_HOOK:
                            TIMING_HOOK("first_token", last_token_at - received_at)
                    elif isinstance(event, ToolCall):
                        tool = event
            await self.send({"type": "text", "token": "", "last": True})
            if TIMING_HOOK and said:
                TIMING_HOOK("last", time.perf_counter() - last_token_at)
        except ConnectionGone:
            return
        except Exception as exc:  # the model failed or timed out: the caller hears an apology
            failure = exc
        finally:
            agent.turn.text = agent.message["content"] = "".join(said)
            if said:
                self.recorder.save(agent.turn)
            else:  # nothing was said (a bare tool call): no empty turn, no empty message
                self.messages = [m for m in self.messages if m is not agent.message]
                self.last_agent = None
        if failure is not None:
            await self._fail(failure)
        elif tool is not None:
            await self._run_tool(tool)

    async def _run_tool(self, tool: ToolCall) -> None:
        reason = str(tool.arguments.get("reason") or "")
        if tool.name == "end_call":
            await self._end(
                "end_call", reason or "the agent ended the call", {"reasonCode": "end_call", "reason": reason}
            )
        elif tool.name == "transfer_to_human":
            summary = str(tool.arguments.get("summary") or "")
            handoff = await database_sync_to_async(services.handoff_task_create)(
                parent_task_id=self.context.task_id, reason=reason, summary=summary
            )
            await self._end("handoff", reason or "the callee asked for a person", {
                "reasonCode": "live-agent-handoff", "reason": reason, "summary": summary,
                "handoffTaskId": str(handoff.id),
            })  # fmt: skip
        else:
            log.warning("the model called an unknown tool %r on task %s", tool.name, self.context.task_id)

    async def _fail(self, exc: Exception) -> None:
        # Only the exception type and status: provider messages may echo request data.
        detail = type(exc).__name__ + (f" (HTTP {exc.status_code})" if hasattr(exc, "status_code") else "")
        log.warning("LLM failed on call task %s: %s", self.context.task_id, detail)
        await self._say_and_end(
            APOLOGY, "llm_error", f"the language model failed: {detail}", {"reasonCode": "llm_error"}
        )

    async def _deadline(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not self.ended:
            await self._stop_response()
            await self._say_and_end(TIME_UP, "max_duration", f"the call reached its {seconds:.0f} s limit",
                                    {"reasonCode": "max_duration"})  # fmt: skip

    async def _say_and_end(self, text: str, code: str, detail: str, handoff: dict[str, Any]) -> None:
        if self.ended:
            return
        with contextlib.suppress(ConnectionGone):
            await self.send({"type": "text", "token": text, "last": True})
        self.messages.append({"role": "assistant", "content": text})
        self.recorder.save(self.recorder.open_turn("agent", text))
        await self._end(code, detail, handoff)

    async def _end(self, code: str, detail: str, handoff: dict[str, Any]) -> None:
        if self.ended:
            return
        self.ended = True
        self.recorder.end_reason(f"{code}: {detail}")
        # Twilio's "completed" callback follows our "end" closely: the reason and the last
        # turns must be in the database before it arrives, since they decide the task.
        await self.recorder.flush()
        with contextlib.suppress(ConnectionGone):
            await self.send({"type": "end", "handoffData": json.dumps(handoff)})
        if self.deadline is not None and self.deadline is not asyncio.current_task():
            self.deadline.cancel()

    async def _stop_response(self) -> None:
        response = self.response
        if response is not None and not response.done() and response is not asyncio.current_task():
            response.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await response


# --- <Gather> mode --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatherReply:
    text: str
    ended: bool


async def gather_turn(*, task_id: Any, speech: str) -> GatherReply | None:
    """One ``<Gather>`` round: the same agent logic, collected instead of streamed."""
    context = await database_sync_to_async(load_call_context)(task_id)
    if context is None:
        return None
    history = await database_sync_to_async(services.transcript_history)(call_id=context.call_id)
    recorder = TurnRecorder(call_id=context.call_id, task_id=context.task_id,
                            next_sequence=(history[-1].sequence + 1) if history else 1)  # fmt: skip
    tokens: list[str] = []
    ended = False

    async def collect(message: dict[str, Any]) -> None:
        nonlocal ended
        if message["type"] == "text":
            tokens.append(message["token"])
        elif message["type"] == "end":
            ended = True

    conversation = Conversation(context=context, send=collect, recorder=recorder, history=history)
    await conversation.on_prompt(speech, None)
    await conversation.wait_idle()
    await recorder.close()
    return GatherReply("".join(tokens).strip(), ended)
