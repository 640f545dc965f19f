"""Websocket routes of every app, gathered in one place."""

from django.urls import path

from dashboard.consumers import TaskUpdatesConsumer

websocket_urlpatterns = [
    path("ws/tasks/<uuid:task_id>/", TaskUpdatesConsumer.as_asgi()),
]
