"""Websocket routes of every app, gathered in one place."""

from django.urls import path

from agents.voice.consumers import ConversationRelayConsumer
from dashboard.consumers import (
    BroadcastConsumer,
    CallConsumer,
    CallsConsumer,
    HealthConsumer,
    InboxConsumer,
    TaskUpdatesConsumer,
)

# Opened by providers, not browsers: no Origin header and no session; each consumer
# verifies the provider's signature itself (asgi.py routes these outside the origin check).
provider_websocket_urlpatterns = [
    path("ws/voice/relay/<uuid:task_id>/", ConversationRelayConsumer.as_asgi()),
]

websocket_urlpatterns = [
    path("ws/tasks/<uuid:task_id>/", TaskUpdatesConsumer.as_asgi()),
    path("ws/inbox/", InboxConsumer.as_asgi()),
    path("ws/calls/", CallsConsumer.as_asgi()),
    path("ws/calls/<uuid:task_id>/", CallConsumer.as_asgi()),
    path("ws/health/", HealthConsumer.as_asgi()),
    path("ws/broadcasts/<uuid:broadcast_id>/", BroadcastConsumer.as_asgi()),
]
