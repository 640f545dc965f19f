"""Voice services: calls, their status, transcript turns and hand-offs. Keyword-only, typed.

Status callbacks are unordered and may repeat: a call's status only moves up the rank
(``STATUS_RANK``), and the task's final state is decided once, by the first final status.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from agents.common.status_check import StatusCheck
from agents.voice import links
from agents.voice.models import HandoffQueue
from agents.voice.providers import VoiceProvider, get_provider
from comms_platform import events, outbound
from dossiers.models import Artifact, Call, Direction, TranscriptTurn
from orchestrator import registry
from orchestrator.live import CALLS_GROUP, call_group, send_group
from orchestrator.metrics import observe_provider_call
from orchestrator.models import Task
from orchestrator.services import task_create, task_transition
from orchestrator.states import FINAL, IllegalTransition, TaskStatus

log = logging.getLogger(__name__)
S = TaskStatus

# Twilio CallStatus values (plus the ``initiated`` event) ranked by how far a call got.
STATUS_RANK: dict[str, int] = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "completed": 4,
    "busy": 4,
    "no-answer": 4,
    "failed": 4,
    "canceled": 4,
}
# A final call status that is not ``completed`` fails the task with this code.
FAILED_CALL_CODES: dict[str, str] = {
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "call_failed",
    "canceled": "canceled",
}
# End reasons (set by the conversation) that make a completed call a failed task.
FAILING_END_REASONS = {"llm_error"}
# The end reason an operator's hang-up sets (console → orchestrator action → provider): the
# completed callback then cancels the task.
OPERATOR_HANG_UP = "operator_hangup"


class UnknownCallStatus(ValueError):
    pass


def call_create(*, task_id: Any, to: str, from_address: str, contact_id: Any = None,
                correlation_id: str = "") -> Call:  # fmt: skip
    return Call.objects.create(
        task_id=task_id,
        contact_id=contact_id,
        correlation_id=correlation_id,
        direction=Direction.OUTBOUND,
        from_address=from_address,
        to_address=to,
        status="queued",
        occurred_at=timezone.now(),
    )


def call_for_task(*, task_id: Any) -> Call | None:
    return Call.objects.filter(task_id=task_id).order_by("created_at").first()


def call_started(*, task_id: Any, call_id: int, call_sid: str, provider: str) -> None:
    """The provider accepted the call: remember its SID and move the task to in_progress."""
    Call.objects.filter(id=call_id, provider_sid__isnull=True).update(
        provider_sid=call_sid, updated_at=timezone.now()
    )
    try:
        task_transition(task_id=task_id, to=S.IN_PROGRESS, actor="agent:voice", provider_id=call_sid,
                        details={"provider": provider, "call_sid": call_sid})  # fmt: skip
    except IllegalTransition:
        log.info("call %s started but task %s is already final", call_sid, task_id)


@dataclass(frozen=True)
class StatusUpdate:
    call_sid: str
    status: str
    duration_seconds: int | None = None
    answered_by: str = ""


def call_status_apply(*, task_id: Any, update: StatusUpdate) -> str:
    """Apply one status callback; returns an outcome label. Never lowers the status."""
    if update.status not in STATUS_RANK:
        raise UnknownCallStatus(update.status)
    with transaction.atomic():
        call = Call.objects.select_for_update().filter(task_id=task_id).order_by("created_at").first()
        if call is None:
            return "unknown_call"
        if STATUS_RANK[update.status] <= STATUS_RANK.get(call.status, 0):
            return "stale"
        _update_call_row(call, update)
        _publish_call_status(task_id, update.status)
        if STATUS_RANK[update.status] == 4:
            events.publish("call.completed", events.call_data(call), task_id=task_id)
            _finish_task(task_id, call)
            _finish_open_handoffs(task_id)
        elif update.status == "in-progress":
            _ensure_in_progress(task_id, update.call_sid)
    return update.status


def _update_call_row(call: Call, update: StatusUpdate) -> None:
    now = timezone.now()
    call.status = update.status
    fields = ["status", "updated_at"]
    if not call.provider_sid:
        call.provider_sid, fields = update.call_sid, [*fields, "provider_sid"]
    if update.answered_by:
        call.answered_by, fields = update.answered_by, [*fields, "answered_by"]
    if update.status == "in-progress" and call.started_at is None:
        call.started_at, fields = now, [*fields, "started_at"]
    if STATUS_RANK[update.status] == 4:
        call.ended_at = now
        call.duration_seconds = update.duration_seconds
        fields += ["ended_at", "duration_seconds"]
    call.save(update_fields=fields)


def _finish_open_handoffs(task_id: Any) -> None:
    """The call ended with a hand-off still open (the caller hung up while the operator's phone
    rang: Twilio asks no <Dial> action then): it becomes a callback, so it is final either way."""
    open_ids = Task.objects.filter(parent_id=task_id, type="call.handoff").exclude(status__in=FINAL)
    for handoff_id in open_ids.values_list("id", flat=True):
        registry.call_hook("call.handoff.no_answer", handoff_task_id=handoff_id, dial_status="call-ended")


def _publish_call_status(task_id: Any, status: str) -> None:
    """Tell the live call view (group ``call.<task>``) after commit; never raises."""

    def send() -> None:
        send_group(call_group(task_id), {"type": "call.status", "status": status})
        send_group(CALLS_GROUP, {"type": "calls.update", "task_id": str(task_id), "call_status": status})

    transaction.on_commit(send)


def _ensure_in_progress(task_id: Any, call_sid: str) -> None:
    with contextlib.suppress(IllegalTransition):  # the task may be final already
        task_transition(task_id=task_id, to=S.IN_PROGRESS, actor="webhook:twilio", provider_id=call_sid)


def _finish_task(task_id: Any, call: Call) -> None:
    code, _, message = call.end_reason.partition(": ")
    result = {
        "call_sid": call.provider_sid,
        "call_status": call.status,
        "duration_seconds": call.duration_seconds,
        "answered_by": call.answered_by,
        "end_reason": call.end_reason,
        "turns": call.turns.count(),
    }
    if call.status in FAILED_CALL_CODES:
        to, error_code, error_message = (
            S.FAILED,
            FAILED_CALL_CODES[call.status],
            f"the call ended: {call.status}",
        )
    elif code == OPERATOR_HANG_UP:
        to, error_code, error_message = S.CANCELLED, OPERATOR_HANG_UP, message or "hung up by an operator"
    elif code in FAILING_END_REASONS:
        to, error_code, error_message = S.FAILED, code, message or code
    else:
        to, error_code, error_message = S.SUCCEEDED, None, None
    try:
        task_transition(task_id=task_id, to=to, actor="webhook:twilio", result=result,
                        error_code=error_code, error_message=error_message)  # fmt: skip
    except IllegalTransition:
        log.info("task %s already final; call %s ended %s", task_id, call.provider_sid, call.status)


def call_end_reason_set(*, call_id: int, reason: str) -> None:
    """Why the conversation ended (``code: detail``); the first reason wins."""
    Call.objects.filter(id=call_id, end_reason="").update(end_reason=reason[:200], updated_at=timezone.now())


# --- Transcript ---------------------------------------------------------------------------


def transcript_next_sequence(*, call_id: int) -> int:
    last = (
        TranscriptTurn.objects.filter(call_id=call_id)
        .order_by("-sequence")
        .values_list("sequence", flat=True)
    )
    return (last.first() or 0) + 1


def transcript_turn_save(*, call_id: int, sequence: int, speaker: str, text: str, started_at: datetime,
                         interrupted: bool = False) -> None:  # fmt: skip
    transcript_write(call_id=call_id, turns=[TurnData(sequence, speaker, text, started_at, interrupted)])


@dataclass(frozen=True)
class TurnData:
    sequence: int
    speaker: str
    text: str
    started_at: datetime
    interrupted: bool = False


def transcript_write(*, call_id: int, turns: list[TurnData], end_reason: str = "") -> None:
    """Write a batch of turns (new ones inserted, known ones updated: an interrupt cuts a
    turn already saved) and optionally the call's end reason, in one transaction."""
    latest = {turn.sequence: turn for turn in turns}  # a later snapshot of a turn wins
    with transaction.atomic():
        known = set(
            TranscriptTurn.objects.filter(call_id=call_id, sequence__in=latest).values_list(
                "sequence", flat=True
            )
        )
        TranscriptTurn.objects.bulk_create(
            [TranscriptTurn(call_id=call_id, sequence=t.sequence, speaker=t.speaker, text=t.text,
                            started_at=t.started_at, interrupted=t.interrupted)
             for t in latest.values() if t.sequence not in known]
        )  # fmt: skip
        for sequence in known:
            turn = latest[sequence]
            TranscriptTurn.objects.filter(call_id=call_id, sequence=sequence).update(
                text=turn.text, interrupted=turn.interrupted
            )
        if end_reason:
            call_end_reason_set(call_id=call_id, reason=end_reason)
            events.publish_transcript_ready(call_id=call_id, end_reason=end_reason)


def transcript_history(*, call_id: int) -> list[TranscriptTurn]:
    return list(TranscriptTurn.objects.filter(call_id=call_id).order_by("sequence"))


# --- Hand-off and recordings ---------------------------------------------------------------


def handoff_task_create(*, parent_task_id: Any, reason: str, summary: str) -> Task:
    """Put the caller in the operators' queue: a ``call.handoff`` child task."""
    parent = Task.objects.only("id", "contact_id", "correlation_id").get(id=parent_task_id)
    task, _ = task_create(
        type="call.handoff",
        payload={"reason": reason[:500], "summary": summary[:2000], "call_task": str(parent_task_id)},
        contact_id=parent.contact_id,
        correlation_id=parent.correlation_id,
        priority=8,
        source="agent:voice",
        parent_id=parent_task_id,
    )
    return task


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def handoff_queue_open(*, handoff_task_id: Any, call_task_id: Any, queue_name: str, call_sid: str) -> None:
    """The caller is about to wait in the hand-off's queue (the <Enqueue> we answer)."""
    handoff = _uuid_or_none(handoff_task_id)
    if handoff is None or not Task.objects.filter(id=handoff, type="call.handoff").exists():
        return
    HandoffQueue.objects.get_or_create(
        handoff_task_id=handoff,
        defaults={"call_task_id": call_task_id, "queue_name": queue_name[:64], "call_sid": call_sid[:34]},
    )


def handoff_queue_seen(*, handoff_task_id: Any, queue_sid: str) -> None:
    """Twilio's wait-URL request names the queue's SID: keep the first one."""
    handoff = _uuid_or_none(handoff_task_id)
    if handoff is not None and queue_sid:
        HandoffQueue.objects.filter(handoff_task_id=handoff, queue_sid="").update(queue_sid=queue_sid)


def handoff_queue_left(*, handoff_task_id: Any, result: str) -> None:
    handoff = _uuid_or_none(handoff_task_id)
    if handoff is not None:
        HandoffQueue.objects.filter(handoff_task_id=handoff, result__in=("", "taken")).update(result=result)


def handoff_queue_taken_by(*, handoff_task_id: Any, operator: str) -> HandoffQueue | None:
    """The queue row ``operator`` took (None when they did not take it)."""
    handoff = _uuid_or_none(handoff_task_id)
    if not operator or handoff is None:
        return None
    return HandoffQueue.objects.filter(handoff_task_id=handoff, taken_by=operator).first()


@registry.hook("call.handoff.answer")
def handoff_answer(*, handoff_task_id: Any, operator: str, phone: str = "") -> str:
    """The console's Take call (through the orchestrator's registry): ask the provider to
    dequeue the waiting caller to the bridge URL, which dials ``operator``'s ``phone`` (when
    they have one) or their Voice SDK client leg.
    ``asked``; ``gone`` (the caller left the queue, or it was taken already); ``not_ready``
    (Twilio has not told us the queue's SID yet). The provider's errors propagate."""
    handoff = _uuid_or_none(handoff_task_id)
    row = HandoffQueue.objects.filter(handoff_task_id=handoff).first() if handoff else None
    if row is None or row.result not in ("",) or row.taken_by:
        return "gone"
    if not row.queue_sid or not row.call_sid:
        return "not_ready"
    if not HandoffQueue.objects.filter(pk=row.pk, taken_by="", result="").update(
        taken_by=operator, taken_phone=phone, result="taken"
    ):
        return "gone"  # another click won
    provider = get_provider()
    url = links.handoff_bridge_url(row.call_task_id, row.handoff_task_id, operator)
    try:
        with observe_provider_call(provider.name, "queues.members.update"):
            provider.dequeue(queue_sid=row.queue_sid, call_sid=row.call_sid, url=url)
    except Exception:
        HandoffQueue.objects.filter(pk=row.pk).update(taken_by="", taken_phone="", result="")  # still waits
        raise
    return "asked"


def recording_reference_store(*, task_id: Any, recording_url: str, content_type: str = "audio/wav") -> str:
    """Keep the provider's recording as an artifact reference, then download it in the
    background (``voice.fetch_recording``); returns an outcome label."""
    with transaction.atomic():
        call = Call.objects.select_for_update().filter(task_id=task_id).order_by("created_at").first()
        if call is None:
            return "unknown_call"
        if call.recording_id is not None:
            return "duplicate_recording"
        artifact_id = uuid.uuid4()
        now = timezone.now()
        artifact = Artifact.objects.create(
            id=artifact_id,
            contact_id=call.contact_id,
            task_id=task_id,
            correlation_id=call.correlation_id,
            kind="recording",
            # Where the media will be stored once downloaded (never empty: retention and
            # erasure delete blobs by key); size and sha256 stay empty until then.
            storage_key=f"artifacts/{now:%Y/%m}/{artifact_id}",
            content_type=content_type,
            source_url=recording_url,
            occurred_at=now,
        )
        call.recording = artifact
        call.save(update_fields=["recording", "updated_at"])
        if recording_downloads_enabled():
            transaction.on_commit(lambda: _enqueue_fetch(artifact.id))
    return "recording_stored"


def recording_downloads_enabled() -> bool:
    # The simulated provider's recording URLs point at api.twilio.com: offline test mode
    # keeps the reference only, unless a (fake) Twilio API address is configured.
    return not settings.TEST_MODE or bool(settings.TWILIO_API_BASE_URL)


def _enqueue_fetch(artifact_id: Any) -> None:
    from agents.voice.tasks import fetch_recording

    try:
        fetch_recording.apply_async(args=[str(artifact_id)], queue="voice")
    except Exception:  # the broker is down: the reference stays; re-run the task later
        log.warning("recording %s not queued for download", artifact_id, exc_info=True)


def recordings_pending_fetch(
    *, min_age_seconds: float = 30.0, window_hours: float = 48.0, limit: int = 200
) -> int:
    """Queue the download of call recordings not fetched yet (the first request was lost, or
    every retry failed): the artifact row without a digest is the outbox. Returns how many."""
    if not recording_downloads_enabled():
        return 0
    now = timezone.now()
    pending = Artifact.objects.filter(
        kind="recording", sha256="",
        occurred_at__gte=now - timedelta(hours=window_hours),
        occurred_at__lte=now - timedelta(seconds=min_age_seconds),
    ).order_by("occurred_at").values_list("id", flat=True)[:limit]  # fmt: skip
    ids = list(pending)
    for artifact_id in ids:
        _enqueue_fetch(artifact_id)
    return len(ids)


def recording_fetch(*, artifact_id: Any) -> str:
    """Download the recording's media (WAV) with the account's credentials and store it."""
    from agents.voice.providers.twilio import TWILIO_HOST

    artifact = Artifact.objects.get(id=artifact_id)
    if artifact.sha256:
        return "already_stored"
    url = artifact.source_url + ".wav"  # Twilio serves the media at the recording URL + extension
    if settings.TWILIO_API_BASE_URL:
        url = TWILIO_HOST.sub(settings.TWILIO_API_BASE_URL.rstrip("/"), url)
    # Only from Twilio's hosts, credentials only to its API host, never a private address;
    # Twilio's redirect to its storage is followed without credentials (comms_platform.outbound).
    try:
        with observe_provider_call("twilio", "recordings.fetch") as observed:
            response, _ = outbound.fetch(
                url, credential_hosts=outbound.twilio_credential_hosts(), redirect_hosts=outbound.twilio_redirect_hosts(),
                auth=(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN), timeout=30,
            )  # fmt: skip
            if response.status_code >= 400:
                observed.failed(f"http_{response.status_code}")
    except outbound.OutboundRefused as exc:
        log.warning("voice.recording_refused", extra={"artifact_id": str(artifact.id), "reason": str(exc)})
        return "refused"
    response.raise_for_status()
    content = response.content
    key = default_storage.save(artifact.storage_key, ContentFile(content))
    Artifact.objects.filter(id=artifact.id, sha256="").update(
        storage_key=key,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        content_type=response.headers.get("Content-Type", artifact.content_type).split(";")[0],
    )
    return "downloaded"


def call_hang_up(*, call_sid: str) -> None:
    """Ask the provider to end the call (observed: ``calls.update``); its errors propagate."""
    provider = get_provider()
    with observe_provider_call(provider.name, "calls.update"):
        provider.hang_up(call_sid)


class CallStatusCheck(StatusCheck):
    """A call still in progress past its channel's age: its final callback was lost. The kit's
    status check (agents/common/status_check.py) with the voice agent's hooks."""

    agent, noun, operation = "voice", "call", "calls.fetch"

    def provider_sid(self, task: Task) -> str:
        call = call_for_task(task_id=task.id)
        return (task.provider_id or call.provider_sid or "") if call is not None else ""

    def provider(self) -> VoiceProvider:
        return get_provider()

    def fetch(self, provider: VoiceProvider, sid: str) -> tuple[str, int | None]:
        return provider.fetch_call(sid)

    def is_final(self, status: str) -> bool:
        return STATUS_RANK.get(status) == 4

    def apply(self, task: Task, *, sid: str, status: str, detail: Any, actor: str) -> str:
        return call_status_apply(task_id=task.id, update=StatusUpdate(call_sid=sid, status=status,
                                                                     duration_seconds=detail))  # fmt: skip


def call_status_check(*, task_id: Any) -> str:
    return CallStatusCheck().run(task_id)
