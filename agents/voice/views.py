"""Twilio's voice webhooks: the call's TwiML, the ``<Connect>`` action, ``<Gather>`` rounds,
call status and recording callbacks. All verify ``X-Twilio-Signature`` (403 otherwise)."""

from __future__ import annotations

import logging
from abc import ABCMeta, abstractmethod
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from agents.common.models import WebhookEvent
from agents.common.twilio_security import is_valid_twilio_request
from agents.common.webhooks import FORM_TYPES, BadWebhook, WebhookView, on_refused, refuse_unreadable
from agents.voice import links, services, twiml
from agents.voice.conversation import CallContext, gather_turn, load_call_context
from comms_platform import jsonsafe
from orchestrator import registry

log = logging.getLogger(__name__)
XML = "application/xml"


def _refused(kind: str) -> JsonResponse:
    on_refused("twilio", kind)
    return JsonResponse({"error": {"code": "invalid_signature", "message": "Missing or invalid signature."}},
                        status=403)  # fmt: skip


def _no_call() -> JsonResponse:
    return JsonResponse({"error": {"code": "not_found", "message": "No such call."}}, status=404)


@method_decorator(csrf_exempt, name="dispatch")
class SignedTwimlView(View, metaclass=ABCMeta):
    """A Twilio request answered with TwiML (not an event to store: Twilio may ask again)."""

    kind = ""
    http_method_names = ["post"]

    def post(self, request: HttpRequest, task_id) -> HttpResponse:
        unreadable = refuse_unreadable(request, FORM_TYPES)
        if unreadable is not None:
            return unreadable
        if not is_valid_twilio_request(request):
            return _refused(self.kind)
        context = load_call_context(task_id)
        if context is None:
            return _no_call()
        return HttpResponse(self.answer(request, context), content_type=XML)

    @abstractmethod
    def answer(self, request: HttpRequest, context: CallContext) -> str:
        """The TwiML document for this request."""


class TwimlView(SignedTwimlView):
    kind = "voice_twiml"

    def answer(self, request: HttpRequest, context: CallContext) -> str:
        if settings.VOICE_MODE == "gather":
            if context.greeting and services.transcript_next_sequence(call_id=context.call_id) == 1:
                services.transcript_turn_save(call_id=context.call_id, sequence=1, speaker="agent",
                                              text=context.greeting, started_at=timezone.now())  # fmt: skip
            return twiml.gather(context, context.greeting)
        return twiml.conversation_relay(context)


class GatherView(SignedTwimlView):
    kind = "voice_gather"

    def answer(self, request: HttpRequest, context: CallContext) -> str:
        speech = request.POST.get("SpeechResult", "").strip()
        if not speech:
            return twiml.gather(context, "")
        reply = async_to_sync(gather_turn)(task_id=context.task_id, speech=speech)
        if reply is None or reply.ended:
            return twiml.say_and_hang_up(context, reply.text if reply else "")
        return twiml.gather(context, reply.text)


class ConnectActionView(SignedTwimlView):
    """Twilio's request after ConversationRelay ended (our ``end`` message carries HandoffData)."""

    kind = "voice_connect_action"

    def answer(self, request: HttpRequest, context: CallContext) -> str:
        try:
            handoff = jsonsafe.loads(request.POST.get("HandoffData") or "{}")
        except (ValueError, RecursionError):  # not JSON, or nested too deep to read
            handoff = {}
        if isinstance(handoff, dict) and handoff.get("reasonCode") == "live-agent-handoff":
            handoff_id = str(handoff.get("handoffTaskId") or "")
            route = (
                registry.call_hook("call.handoff.route", handoff_task_id=handoff_id) if handoff_id else None
            )
            if isinstance(route, dict) and route.get("transfer") == "phone" and route.get("phone"):
                # The live call is transferred: <Dial> the operator's phone (docs/console.md).
                return twiml.dial_operator(
                    context, route["phone"], action=links.handoff_dial_url(context.task_id, handoff_id)
                )
            if isinstance(route, dict) and route.get("transfer") == "console":
                # The caller waits in the hand-off's queue until the operator takes the call.
                services.handoff_queue_open(handoff_task_id=handoff_id, call_task_id=context.task_id,
                                            queue_name=route["queue"], call_sid=request.POST.get("CallSid", ""))  # fmt: skip
                return twiml.enqueue_caller(context, route["queue"],
                                            action=links.handoff_queue_url(context.task_id, handoff_id),
                                            wait_url=links.handoff_wait_url(context.task_id, handoff_id))  # fmt: skip
            if handoff_id:
                registry.call_hook("call.handoff.finish", handoff_task_id=handoff_id, outcome="callback")
            return twiml.say_and_hang_up(context, twiml.HOLD_MESSAGE)
        return twiml.say_and_hang_up(context, "")


class HandoffDialView(SignedTwimlView):
    """Twilio's request when the <Dial> to the operator ended: answered (the hand-off is done)
    or not (no answer, busy, failed: the caller hears the callback message, the conversation
    waits unassigned for a callback). The hand-off task is final either way."""

    kind = "voice_handoff_dial"

    def answer(self, request: HttpRequest, context: CallContext) -> str:
        handoff_id = request.GET.get("handoff", "")
        if request.POST.get("DialCallStatus") in ("completed", "answered"):
            registry.call_hook("call.handoff.finish", handoff_task_id=handoff_id, outcome="connected")
            return twiml.say_and_hang_up(context, "")
        registry.call_hook("call.handoff.no_answer", handoff_task_id=handoff_id,
                           dial_status=request.POST.get("DialCallStatus", "")[:32])  # fmt: skip
        return twiml.say_and_hang_up(context, twiml.HOLD_MESSAGE)


class HandoffWaitView(SignedTwimlView):
    """The <Enqueue> wait URL, asked again each time its TwiML ends: the hold message, until the
    caller has waited VOICE_HANDOFF_DIAL_SECONDS (then <Leave/>). Keeps the queue's SID, which
    the console's Take call needs for the Queue Members API."""

    kind = "voice_handoff_wait"

    def answer(self, request: HttpRequest, context: CallContext) -> str:
        services.handoff_queue_seen(handoff_task_id=request.GET.get("handoff", ""),
                                    queue_sid=request.POST.get("QueueSid", "")[:34])  # fmt: skip
        waited = request.POST.get("QueueTime", "0")
        return twiml.queue_wait(context, queue_seconds=int(waited) if waited.isdigit() else 0)


class HandoffQueueView(SignedTwimlView):
    """The <Enqueue> action: the caller left the queue. ``bridged`` (connected to an operator
    who dialled the queue) finishes the hand-off as connected; ``redirected`` (taken from the
    console: the bridge URL's <Dial> decides) changes nothing; anything else (``leave`` after the
    wait, ``hangup``, ``queue-full``, ``error``) is the callback path."""

    kind = "voice_handoff_queue"

    def answer(self, request: HttpRequest, context: CallContext) -> str:
        handoff_id = request.GET.get("handoff", "")
        result = request.POST.get("QueueResult", "")[:32]
        services.handoff_queue_left(handoff_task_id=handoff_id, result=result)
        if result == "redirected":
            return twiml.empty()
        if result == "bridged":
            registry.call_hook("call.handoff.finish", handoff_task_id=handoff_id, outcome="connected")
            return twiml.say_and_hang_up(context, "")
        registry.call_hook(
            "call.handoff.no_answer", handoff_task_id=handoff_id, dial_status=f"queue-{result}"
        )
        return twiml.say_and_hang_up(context, twiml.HOLD_MESSAGE)


class HandoffBridgeView(SignedTwimlView):
    """Where the console's Take call sends the dequeued caller: a <Dial> to the operator's
    phone (or, without one, their Voice SDK client leg), whose action (the hand-off dial view)
    finishes the hand-off."""

    kind = "voice_handoff_bridge"

    def answer(self, request: HttpRequest, context: CallContext) -> str:
        handoff_id, operator = request.GET.get("handoff", ""), request.GET.get("operator", "")[:150]
        taken = services.handoff_queue_taken_by(handoff_task_id=handoff_id, operator=operator)
        if taken is None:
            registry.call_hook("call.handoff.no_answer", handoff_task_id=handoff_id, dial_status="not-taken")
            return twiml.say_and_hang_up(context, twiml.HOLD_MESSAGE)
        action = links.handoff_dial_url(context.task_id, handoff_id)
        if taken.taken_phone:
            return twiml.dial_operator(context, taken.taken_phone, action=action)
        return twiml.dial_client(operator, action=action)


class CallStatusWebhook(WebhookView):
    provider = "twilio"
    kind = "call_status"

    def verify(self, request: HttpRequest) -> bool:
        return is_valid_twilio_request(request)

    def parse(self, request: HttpRequest) -> list[dict[str, Any]]:
        event = request.POST.dict()
        if not event.get("CallSid") or not event.get("CallStatus"):
            raise BadWebhook("CallSid and CallStatus are required.")
        if event["CallStatus"] not in services.STATUS_RANK:
            raise BadWebhook(f"Unknown CallStatus {event['CallStatus']!r}.")
        return [event]

    def dedupe_key(self, event: dict[str, Any]) -> str:
        return f"call:{event['CallSid']}:{event['CallStatus']}"

    def process(self, event: dict[str, Any], record: WebhookEvent) -> str:
        duration = event.get("CallDuration", "")
        update = services.StatusUpdate(
            call_sid=event["CallSid"],
            status=event["CallStatus"],
            duration_seconds=int(duration) if duration.isdigit() else None,
            answered_by=event.get("AnsweredBy", ""),
        )
        return services.call_status_apply(task_id=self.kwargs["task_id"], update=update)


class RecordingWebhook(WebhookView):
    provider = "twilio"
    kind = "call_recording"

    def verify(self, request: HttpRequest) -> bool:
        return is_valid_twilio_request(request)

    def parse(self, request: HttpRequest) -> list[dict[str, Any]]:
        event = request.POST.dict()
        if not event.get("RecordingSid") or not event.get("RecordingUrl"):
            raise BadWebhook("RecordingSid and RecordingUrl are required.")
        return [event]

    def dedupe_key(self, event: dict[str, Any]) -> str:
        return f"recording:{event['RecordingSid']}:{event.get('RecordingStatus', '')}"

    def process(self, event: dict[str, Any], record: WebhookEvent) -> str:
        if event.get("RecordingStatus", "completed") != "completed":
            return f"ignored_{event.get('RecordingStatus')}"
        return services.recording_reference_store(
            task_id=self.kwargs["task_id"], recording_url=event["RecordingUrl"]
        )
