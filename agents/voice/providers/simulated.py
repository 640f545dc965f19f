"""The simulated voice provider (``COMMS_MODE=test``): Twilio and the callee, played offline.

``start_call`` returns a realistic ``CA…`` SID at once; a background thread then does what
Twilio would: signed status callbacks (initiated, ringing, in-progress), a signed fetch of
our TwiML, then either a scripted ConversationRelay session against OUR websocket endpoint
(setup, a few prompts, one interrupt, then the agent's ``end`` or a hang-up) or, for
``VOICE_MODE=gather``, a few ``<Gather>`` rounds; then the ``completed`` callback (and a
recording callback when asked). Everything is signed with TWILIO_AUTH_TOKEN.

After a hand-off it plays the rest of Twilio and the operator's leg: the ``<Connect>`` action's
TwiML is followed — a ``<Dial>`` is answered by the simulated operator (its action gets
``DialCallStatus=completed``), an ``<Enqueue>`` waits in the queue asking the wait URL until
the console takes the call (``dequeue``: the bridge URL's ``<Dial><Client>`` is answered the
same way) or the wait URL says ``<Leave/>`` (the action gets ``QueueResult=leave``).

Numbers choose behaviour, as Twilio's magic numbers do: a callee whose number ends in
``4357`` (H-E-L-P) asks for a person; a ``<Dial>`` to a number ending in ``0009`` is not
answered (``no-answer``). Every TwiML document the simulated Twilio received, and every
dequeue asked of it, is kept in a journal (``journal(call_sid)``, in Redis when configured)
so tests can assert what the provider was asked to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from xml.etree import ElementTree

import requests
import websockets
import websockets.exceptions
from django.conf import settings
from django.db import transaction
from twilio.request_validator import RequestValidator

from agents.voice.providers.base import OutboundCall, VoiceProvider

log = logging.getLogger(__name__)

# What the simulated callee says, in order. The second answer is interrupted.
SCRIPT = [
    "Hello, who is calling?",
    "Can you tell me a bit more about that?",
    "Sorry, could you say that more briefly?",
    "Thanks, that is all I needed. Goodbye.",
]
# A callee whose number ends in HELP_SUFFIX asks for a person at once (the agent hands off).
HELP_SUFFIX = "4357"
HANDOFF_SCRIPT = ["I want to speak to a person"]
NO_ANSWER_SUFFIX = "0009"  # a <Dial>ed number that never answers
QUEUE_POLL_SECONDS = 0.1
INTERRUPT_PROMPT_INDEX = 1
INTERRUPT_AFTER_TOKENS = 3
RING_SECONDS = 0.3  # long enough for a watcher to open the live call view
STEP_SECONDS = 0.05
REPLY_TIMEOUT_SECONDS = 15.0
HANG_UP_AFTER_SECONDS = 2.0
HTTP_TIMEOUT_SECONDS = 10.0


HANG_UP_KEY = "comms:sim-voice:hang-up:{sid}"
DEQUEUE_KEY = "comms:sim-voice:dequeue:{sid}"
JOURNAL_KEY = "comms:sim-voice:journal:{sid}"
_local_hang_ups: set[str] = set()  # the embedded default: the callee runs in this process
_local_dequeues: dict[str, str] = {}
_local_journal: dict[str, list[dict]] = {}


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)


def hang_up_request(call_sid: str) -> None:
    """What Twilio's call update to ``completed`` is to the simulated callee, which runs in a
    worker process: a flag in Redis it checks between turns."""
    if settings.REDIS_URL:
        _redis().set(HANG_UP_KEY.format(sid=call_sid), "1", ex=3600)
    else:
        _local_hang_ups.add(call_sid)


def hang_up_requested(call_sid: str) -> bool:
    if settings.REDIS_URL:
        try:
            return bool(_redis().exists(HANG_UP_KEY.format(sid=call_sid)))
        except Exception:
            return False
    return call_sid in _local_hang_ups


def dequeue_request(call_sid: str, url: str) -> None:
    """What the Queue Members API update is to the simulated caller waiting in a queue."""
    journal_add(call_sid, {"request": "queue_member_update", "url": url})
    if settings.REDIS_URL:
        _redis().set(DEQUEUE_KEY.format(sid=call_sid), url, ex=3600)
    else:
        _local_dequeues[call_sid] = url


def dequeue_requested(call_sid: str) -> str:
    if settings.REDIS_URL:
        try:
            value = _redis().get(DEQUEUE_KEY.format(sid=call_sid))
        except Exception:
            return ""
        return value.decode() if value else ""
    return _local_dequeues.get(call_sid, "")


def journal_add(call_sid: str, entry: dict) -> None:
    if settings.REDIS_URL:
        with contextlib.suppress(Exception):
            key = JOURNAL_KEY.format(sid=call_sid)
            _redis().pipeline().rpush(key, json.dumps(entry)).expire(key, 3600).execute()
    else:
        _local_journal.setdefault(call_sid, []).append(entry)


def journal(call_sid: str, *, redis_url: str | None = None) -> list[dict]:
    """What the simulated Twilio received for a call, in order: ``{"url", "twiml"}`` for each
    TwiML document our webhooks answered, ``{"request": "queue_member_update", "url"}``.
    ``redis_url``: read the journal of a worker process that uses that Redis."""
    redis_url = settings.REDIS_URL if redis_url is None else redis_url
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
        return [json.loads(x) for x in client.lrange(JOURNAL_KEY.format(sid=call_sid), 0, -1)]
    return list(_local_journal.get(call_sid, []))


class SimulatedVoiceProvider(VoiceProvider):
    name = "simulated"

    def dequeue(self, *, queue_sid: str, call_sid: str, url: str) -> None:
        dequeue_request(call_sid, url)

    def hang_up(self, call_sid: str) -> None:
        hang_up_request(call_sid)

    def start_call(self, call: OutboundCall) -> str:
        sid = new_sid("CA")
        callee = SimulatedCallee(call=call, sid=sid)
        # After commit: the callbacks must find the call rows.
        transaction.on_commit(
            lambda: threading.Thread(target=callee.run, daemon=True, name=f"sim-{sid}").start()
        )
        return sid

    def fetch_call(self, sid: str) -> tuple[str, int | None]:
        # The simulated callee always hangs up in the end: a call it was given is completed.
        return ("completed", None) if sid.startswith("CA") else ("not_found", None)


@dataclass
class SimulatedCallee:
    call: OutboundCall
    sid: str
    sequence: int = 0
    ended_by_agent: bool = False
    handoff_data: str = ""
    hung_up: bool = False  # an operator asked the provider to end the call

    # --- the call ---------------------------------------------------------------------------
    def run(self) -> None:
        started = time.monotonic()
        try:
            self.status("initiated")
            time.sleep(STEP_SECONDS)
            self.status("ringing")
            time.sleep(RING_SECONDS)
            self.status("in-progress", AnsweredBy="human" if self.call.machine_detection else None)
            self.converse()
        except Exception:
            log.exception("simulated call %s broke off", self.sid)
        duration = max(1, round(time.monotonic() - started))
        self.status("completed", CallDuration=str(duration))
        if self.call.record:
            self.recording(duration)

    def converse(self) -> None:
        twiml = self.post(self.call.twiml_url, CallStatus="in-progress")
        root = ElementTree.fromstring(twiml)  # noqa: S314 (our own TwiML, from our server)
        relay = root.find("./Connect/ConversationRelay")
        if relay is not None:
            params = {p.get("name"): p.get("value") for p in relay.findall("Parameter")}
            try:
                asyncio.run(self.relay_session(relay.get("url"), params))
            except (OSError, websockets.exceptions.InvalidHandshake) as exc:
                if not self.call.gather_url:
                    raise
                # Only an ASGI server speaks websockets: under a WSGI-only server (gunicorn,
                # as `manage.py smoke` runs) the simulated call goes on as <Gather> rounds,
                # which reach the same agent logic over plain HTTP.
                log.warning("simulated call %s: no websocket at %s (%s); continuing with <Gather> rounds",
                            self.sid, relay.get("url"), type(exc).__name__)  # fmt: skip
                start = ElementTree.Element("Response")
                ElementTree.SubElement(start, "Gather", action=self.call.gather_url)
                self.gather_session(start)
                return
            action = root.find("./Connect").get("action")
            if action and self.ended_by_agent:
                after = self.post(action, CallStatus="in-progress", HandoffData=self.handoff_data)
                self.journal_twiml(action, after)
                self.operator_leg(after)
        elif root.find("./Gather") is not None:
            self.gather_session(root)

    def operator_leg(self, twiml: str) -> None:
        """Twilio goes on with the <Connect> action's TwiML after a hand-off: a <Dial> rings the
        simulated operator, an <Enqueue> waits in the queue; <Say>/<Hangup> end the call."""
        try:
            root = ElementTree.fromstring(twiml)  # noqa: S314 (our own TwiML)
        except ElementTree.ParseError:
            return
        if root.find("./Dial") is not None:
            self.dial(root.find("./Dial"))
        elif root.find("./Enqueue") is not None:
            self.wait_in_queue(root.find("./Enqueue"))

    def dial(self, dial: ElementTree.Element) -> None:
        """The operator's leg: answered (``completed``), or ``no-answer`` for a number ending in
        NO_ANSWER_SUFFIX; Twilio then asks the <Dial> action."""
        if not dial.get("action"):
            return
        number = "".join(dial.itertext()).strip()
        status = "no-answer" if number.endswith(NO_ANSWER_SUFFIX) else "completed"
        time.sleep(STEP_SECONDS)
        extra = (
            {"DialCallSid": "CA" + uuid.uuid4().hex, "DialCallDuration": "1"} if status == "completed" else {}
        )
        after = self.post(dial.get("action"), CallStatus="in-progress", DialCallStatus=status, **extra)
        self.journal_twiml(dial.get("action"), after)

    def wait_in_queue(self, enqueue: ElementTree.Element) -> None:
        """Hold in the queue: ask the wait URL, play what it says (its <Pause>), ask again; until
        the console takes the call (a dequeue to the bridge URL) or the wait URL says <Leave/>."""
        queue_sid, started = new_sid("QU"), time.monotonic()
        while not hang_up_requested(self.sid):
            waited = str(int(time.monotonic() - started))
            params = {"QueueSid": queue_sid, "QueueTime": waited, "QueuePosition": "1",
                      "CurrentQueueSize": "1", "AvgQueueTime": waited}  # fmt: skip
            wait = self.post(enqueue.get("waitUrl"), CallStatus="in-progress", **params)
            self.journal_twiml(enqueue.get("waitUrl"), wait)
            root = ElementTree.fromstring(wait)  # noqa: S314 (our own TwiML)
            if root.find("./Leave") is not None:
                after = self.post(enqueue.get("action"), CallStatus="in-progress", QueueResult="leave",
                                  QueueSid=queue_sid, QueueTime=waited)  # fmt: skip
                self.journal_twiml(enqueue.get("action"), after)
                return
            pause = sum(int(p.get("length", "1")) for p in root.findall("./Pause"))
            deadline = time.monotonic() + max(pause, 1)
            while time.monotonic() < deadline:
                url = dequeue_requested(self.sid)
                if url:  # taken from the console: the call executes the bridge URL's TwiML
                    bridge = self.post(url, CallStatus="in-progress", QueueSid=queue_sid)
                    self.journal_twiml(url, bridge)
                    dial = ElementTree.fromstring(bridge).find("./Dial")  # noqa: S314 (our own TwiML)
                    if dial is not None:
                        self.dial(dial)
                    return
                time.sleep(QUEUE_POLL_SECONDS)

    def journal_twiml(self, url: str, twiml: str) -> None:
        journal_add(self.sid, {"url": url, "twiml": twiml})

    # --- ConversationRelay ------------------------------------------------------------------
    async def relay_session(self, url: str, params: dict) -> None:
        signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, {})
        async with websockets.connect(url, additional_headers={"X-Twilio-Signature": signature}) as ws:
            await ws.send(json.dumps(self.setup_message(params)))
            script = HANDOFF_SCRIPT if self.call.to.endswith(HELP_SUFFIX) else SCRIPT
            for index, line in enumerate(script):
                if index == 1 and settings.VOICE_SIMULATED_HOLD_SECONDS:
                    # The callee thinks for a while (test mode, to watch or hang up a live call).
                    await self.hold(settings.VOICE_SIMULATED_HOLD_SECONDS)
                if self.hung_up or hang_up_requested(self.sid):
                    self.hung_up = True
                    return  # Twilio closes the socket when the call is updated to completed
                await ws.send(
                    json.dumps({"type": "prompt", "voicePrompt": line, "lang": "en-US", "last": True})
                )
                reply = await self.read_reply(ws)
                if index == INTERRUPT_PROMPT_INDEX and not self.ended_by_agent:
                    # The text arrives faster than it is spoken: the callee talks over the
                    # speech, and Twilio reports how much of it was heard.
                    heard = "".join(reply[:INTERRUPT_AFTER_TOKENS])
                    await ws.send(json.dumps({"type": "interrupt", "utteranceUntilInterrupt": heard,
                                              "durationUntilInterruptMs": 900}))  # fmt: skip
                if self.ended_by_agent:
                    return
            await self.wait_for_end(ws)
            # The caller hangs up: closing the socket is what Twilio does then.

    async def hold(self, seconds: float) -> None:
        """Stay silent on the line for ``seconds``, unless the call is hung up meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if hang_up_requested(self.sid):
                self.hung_up = True
                return
            await asyncio.sleep(0.2)

    async def wait_for_end(self, ws) -> None:
        """After saying goodbye the callee waits a moment for the agent to hang up."""
        try:
            while not self.ended_by_agent:
                message = json.loads(await asyncio.wait_for(ws.recv(), HANG_UP_AFTER_SECONDS))
                if message["type"] == "end":
                    self.ended_by_agent = True
                    self.handoff_data = message.get("handoffData", "")
        except TimeoutError:
            pass

    async def read_reply(self, ws) -> list[str]:
        """The agent's tokens up to ``last: true`` (or its ``end`` message)."""
        tokens: list[str] = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_SECONDS))
            if message["type"] == "text":
                tokens.append(message["token"])
                if message.get("last"):
                    return tokens
            elif message["type"] == "end":
                self.ended_by_agent = True
                self.handoff_data = message.get("handoffData", "")
                return tokens

    def setup_message(self, params: dict) -> dict:
        return {
            "type": "setup",
            "sessionId": "VX" + uuid.uuid4().hex,
            "accountSid": settings.TWILIO_ACCOUNT_SID,
            "callSid": self.sid,
            "parentCallSid": "",
            "from": self.call.from_,
            "to": self.call.to,
            "forwardedFrom": "",
            "callerName": "",
            "direction": "outbound-api",
            "callType": "PSTN",
            "callStatus": "IN-PROGRESS",
            "customParameters": params,
        }

    # --- <Gather> ----------------------------------------------------------------------------
    def gather_session(self, root: ElementTree.Element) -> None:
        for line in SCRIPT:
            if hang_up_requested(self.sid):
                self.hung_up = True
                return
            gather = root.find("./Gather")
            if gather is None:
                return
            twiml = self.post(
                gather.get("action"), CallStatus="in-progress", SpeechResult=line, Confidence="0.92"
            )
            root = ElementTree.fromstring(twiml)  # noqa: S314 (our own TwiML, from our server)
            if root.find("./Gather") is None:  # <Say> + <Hangup/>: the agent ended the call
                self.ended_by_agent = True
                return

    # --- HTTP to our webhooks -----------------------------------------------------------------
    def base_params(self) -> dict[str, str]:
        return {
            "CallSid": self.sid,
            "AccountSid": settings.TWILIO_ACCOUNT_SID,
            "From": self.call.from_,
            "To": self.call.to,
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
        }

    def status(self, status: str, **extra: str | None) -> None:
        params = {**self.base_params(), "CallStatus": status, "SequenceNumber": str(self.sequence),
                  "CallbackSource": "call-progress-events", "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())}  # fmt: skip
        params.update({k: v for k, v in extra.items() if v is not None})
        self.sequence += 1
        self.post(self.call.status_callback, **params)

    def recording(self, duration: int) -> None:
        recording_sid = new_sid("RE")
        url = f"https://api.twilio.com/2010-04-01/Accounts/{settings.TWILIO_ACCOUNT_SID}/Recordings/{recording_sid}"
        self.post(self.call.recording_callback, RecordingSid=recording_sid, RecordingUrl=url,
                  RecordingStatus="completed", RecordingDuration=str(duration), RecordingChannels="1",
                  RecordingSource="OutboundAPI")  # fmt: skip

    def post(self, url: str, **params: str) -> str:
        params = {**self.base_params(), **params}
        # Twilio signs the URL without the connection-override fragment (never sent).
        url = url.split("#", 1)[0]
        signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, params)
        response = requests.post(url, data=params, headers={"X-Twilio-Signature": signature},
                                 timeout=HTTP_TIMEOUT_SECONDS)  # fmt: skip
        response.raise_for_status()
        return response.text
