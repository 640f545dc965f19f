"""The websocket Twilio's ConversationRelay connects to (``ws/voice/relay/<task>/``).

The upgrade request must carry a valid ``X-Twilio-Signature`` over the public ws(s) URL
(PUBLIC_WS_BASE_URL or PUBLIC_BASE_URL) with its query, and that query must open the call's
one live session (``relay_sessions``: signed expiry and nonce, call in progress, no session
yet); anything else is refused before the handshake completes (HTTP 403). The console's live call view (``ws/calls/<task>/``) is
``dashboard.consumers.CallConsumer``, fed through the ``call.<task>`` group.
"""

from __future__ import annotations

import json
import logging
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from twilio.request_validator import RequestValidator

from agents.common.twilio_security import auth_tokens
from agents.common.webhooks import on_refused
from agents.voice import links, services
from agents.voice.conversation import ConnectionGone, Conversation, TurnRecorder, load_call_context
from agents.voice.relay_sessions import RelayRefused, relay_session_open

log = logging.getLogger(__name__)


def signed_ws_url(scope: dict) -> str:
    url = links.ws_base_url() + scope["path"]
    query = scope.get("query_string", b"").decode("latin1")
    return f"{url}?{query}" if query else url


def has_valid_signature(scope: dict) -> bool:
    headers = dict(scope.get("headers", []))
    signature = headers.get(b"x-twilio-signature", b"").decode("latin1")
    if not signature:
        return False
    url = signed_ws_url(scope)
    return any(RequestValidator(token).validate(url, {}, signature) for token in auth_tokens())


def _relay_setup(task_id: str):
    context = load_call_context(task_id)
    if context is None:
        return None, 1
    return context, services.transcript_next_sequence(call_id=context.call_id)


class ConversationRelayConsumer(AsyncWebsocketConsumer):
    # Nothing is ever sent to this consumer through the channel layer: an alias that is not
    # configured makes Channels skip the per-connection layer listener (a Redis BZPOPMIN
    # loop per live call). The live view is fed by TurnRecorder's group_send instead.
    channel_layer_alias = "voice-relay-unused"
    conversation: Conversation | None = None

    async def connect(self) -> None:
        if not has_valid_signature(self.scope):
            log.warning("ConversationRelay upgrade refused: missing or invalid X-Twilio-Signature")
            on_refused("twilio", "relay")
            await self.close(code=4403)
            return
        task_id = str(self.scope["url_route"]["kwargs"]["task_id"])
        query = self.scope.get("query_string", b"").decode("latin1")
        try:
            await database_sync_to_async(relay_session_open)(task_id=task_id, query=query)
        except RelayRefused as exc:
            log.warning("ConversationRelay upgrade refused: %s", exc, extra={"task_id": task_id})
            on_refused("twilio", "relay_session")
            await self.close(code=4403)
            return
        context, next_sequence = await database_sync_to_async(_relay_setup)(task_id)
        if context is None:
            await self.close(code=4404)
            return
        await self.accept()
        recorder = TurnRecorder(call_id=context.call_id, task_id=context.task_id, next_sequence=next_sequence)
        self.conversation = Conversation(context=context, send=self.send_message, recorder=recorder)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        received_at = time.perf_counter()
        if self.conversation is None or text_data is None:
            return
        try:
            message = json.loads(text_data)
        except json.JSONDecodeError:
            log.warning("ConversationRelay sent a message that is not JSON; ignored")
            return
        if isinstance(message, dict):
            await self.conversation.handle(message, received_at)

    async def send_message(self, message: dict) -> None:
        try:
            await self.send(text_data=json.dumps(message))
        except Exception as exc:  # the server's own "client disconnected" error types differ
            raise ConnectionGone from exc

    async def disconnect(self, code: int) -> None:
        if self.conversation is not None:
            await self.conversation.close()
