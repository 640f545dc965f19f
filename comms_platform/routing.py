"""Websocket routes of every app, gathered in one place."""

from django.urls import path

from dashboard.consumers import CallConsumer, InboxConsumer, TaskUpdatesConsumer

websocket_urlpatterns = [
    path("ws/tasks/<uuid:task_id>/", TaskUpdatesConsumer.as_asgi()),
    path("ws/inbox/", InboxConsumer.as_asgi()),
    path("ws/calls/<uuid:task_id>/", CallConsumer.as_asgi()),
]
