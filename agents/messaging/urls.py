from django.urls import path

from agents.messaging.webhooks import InboundView, StatusCallbackView

app_name = "messaging"
urlpatterns = [
    path("status/", StatusCallbackView.as_view(), name="status"),
    path("inbound/", InboundView.as_view(), name="inbound"),
]
