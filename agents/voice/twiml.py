"""TwiML answers for a call (built with twilio's ``VoiceResponse``)."""

from __future__ import annotations

from django.conf import settings
from twilio.twiml.voice_response import VoiceResponse

from agents.voice import links
from agents.voice.conversation import CallContext

CONNECTING_MESSAGE = "Please hold: I am connecting you to a colleague."
HOLD_MESSAGE = "Thank you. A colleague will call you back shortly. Goodbye."
WAIT_MESSAGE = "Please stay on the line: a colleague will be with you in a moment."
WAIT_PAUSE_SECONDS = 5  # between hold messages; Twilio asks the wait URL again when it ends


def conversation_relay(context: CallContext) -> str:
    """``<Connect><ConversationRelay …/></Connect>``: Twilio opens our websocket and relays speech."""
    response = VoiceResponse()
    connect = response.connect(action=links.connect_action_url(context.task_id), method="POST")
    relay = connect.conversation_relay(
        url=links.relay_ws_url(context.task_id),
        welcome_greeting=context.greeting or None,
        language=context.language,
        voice=context.voice,
        dtmf_detection=True,
        interruptible="any",
    )
    relay.parameter(name="task_id", value=context.task_id)
    return str(response)


def _say_kwargs(context: CallContext) -> dict[str, str]:
    # <Say> voices are provider-prefixed (Polly.…, Google.…); ConversationRelay's are not.
    kwargs = {"language": context.language}
    if "." in context.voice:
        kwargs["voice"] = context.voice
    return kwargs


def gather(context: CallContext, text: str) -> str:
    """``VOICE_MODE=gather``: say ``text``, then listen for speech and post it back to us."""
    response = VoiceResponse()
    listen = response.gather(input="speech", action=links.gather_url(context.task_id), method="POST",
                             speech_timeout="auto", language=context.language)  # fmt: skip
    if text:
        listen.say(text, **_say_kwargs(context))
    response.hangup()  # no speech at all: Gather falls through to here
    return str(response)


def dial_operator(context: CallContext, phone: str, *, action: str) -> str:
    """The hand-off: the live call is connected to the operator's phone; Twilio asks ``action``
    when the <Dial> ends (answered, or not within VOICE_HANDOFF_DIAL_SECONDS)."""
    response = VoiceResponse()
    response.say(CONNECTING_MESSAGE, **_say_kwargs(context))
    response.dial(phone, action=action, method="POST", timeout=settings.VOICE_HANDOFF_DIAL_SECONDS)
    return str(response)


def enqueue_caller(context: CallContext, queue: str, *, action: str, wait_url: str) -> str:
    """The console-queue hand-off: the caller waits in the hand-off's own Twilio queue,
    hearing ``wait_url``'s hold message, until the operator takes the call from the console
    (Queue Members API) or the wait URL says ``<Leave/>``; then Twilio asks ``action`` with
    ``QueueResult`` (twilio.com/docs/voice/twiml/enqueue)."""
    response = VoiceResponse()
    response.say(CONNECTING_MESSAGE, **_say_kwargs(context))
    response.enqueue(queue, action=action, method="POST", wait_url=wait_url, wait_url_method="POST")
    return str(response)


def queue_wait(context: CallContext, *, queue_seconds: int) -> str:
    """The wait URL's answer: the hold message and a pause, or ``<Leave/>`` once the caller has
    waited VOICE_HANDOFF_DIAL_SECONDS (the <Enqueue> action then gets ``QueueResult=leave``)."""
    response = VoiceResponse()
    remaining = settings.VOICE_HANDOFF_DIAL_SECONDS - queue_seconds
    if remaining <= 0:
        response.leave()
        return str(response)
    response.say(WAIT_MESSAGE, **_say_kwargs(context))
    response.pause(length=max(1, min(WAIT_PAUSE_SECONDS, remaining)))
    return str(response)


def dial_client(operator: str, *, action: str) -> str:
    """The dequeued caller is connected to the operator's client leg (a Twilio Voice SDK
    client registered as the operator's username)."""
    response = VoiceResponse()
    dial = response.dial(action=action, method="POST", timeout=settings.VOICE_HANDOFF_DIAL_SECONDS)
    dial.client(operator)
    return str(response)


def empty() -> str:
    return str(VoiceResponse())


def say_and_hang_up(context: CallContext | None, text: str) -> str:
    response = VoiceResponse()
    if text:
        response.say(text, **(_say_kwargs(context) if context else {}))
    response.hangup()
    return str(response)
