from django.urls import path

from agents.voice import views

urlpatterns = [
    path("<uuid:task_id>/twiml/", views.TwimlView.as_view(), name="voice-twiml"),
    path("<uuid:task_id>/status/", views.CallStatusWebhook.as_view(), name="voice-status"),
    path("<uuid:task_id>/recording/", views.RecordingWebhook.as_view(), name="voice-recording"),
    path("<uuid:task_id>/connect-action/", views.ConnectActionView.as_view(), name="voice-connect-action"),
    path("<uuid:task_id>/handoff-dial/", views.HandoffDialView.as_view(), name="voice-handoff-dial"),
    path("<uuid:task_id>/handoff-wait/", views.HandoffWaitView.as_view(), name="voice-handoff-wait"),
    path("<uuid:task_id>/handoff-queue/", views.HandoffQueueView.as_view(), name="voice-handoff-queue"),
    path("<uuid:task_id>/handoff-bridge/", views.HandoffBridgeView.as_view(), name="voice-handoff-bridge"),
    path("<uuid:task_id>/gather/", views.GatherView.as_view(), name="voice-gather"),
]
