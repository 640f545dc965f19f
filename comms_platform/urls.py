from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from agents.messaging.providers.gateway import GatewayStatusView
from agents.voice.api import CallCreateView
from comms_platform import health, metrics_view
from dossiers.links import serve_artifact
from orchestrator.api.agents import AgentListView

handler400 = "orchestrator.api.errors.handler400"
handler404 = "orchestrator.api.errors.handler404"
handler500 = "orchestrator.api.errors.handler500"

urlpatterns = [
    # The busiest endpoints first: Django tries the patterns in order, and task intake and
    # the status callbacks should not be matched against the admin's patterns first.
    path("api/calls/", CallCreateView.as_view(), name="call-create"),
    path("api/", include("orchestrator.api.urls")),
    path("webhooks/twilio/messaging/", include("agents.messaging.urls")),
    path("webhooks/gateway/messaging/status/", GatewayStatusView.as_view(), name="gateway-messaging-status"),
    path("healthz", health.healthz, name="healthz"),
    path("favicon.ico", RedirectView.as_view(url="/static/dashboard/favicon.svg", permanent=True)),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view.metrics, name="metrics"),
    path("api/", include("dossiers.api.urls")),
    path("api/agents/", AgentListView.as_view(), name="agent-list"),
    path("api/", include("event_webhooks.api.urls")),
    path("api/", include("broadcasts.api.urls")),
    # Every artifact link, whoever hands it out (dossiers/links.py).
    path("a/<str:token>/", serve_artifact, name="artifact"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("webhooks/twilio/voice/", include("agents.voice.urls")),
    path("admin/", include("dashboard.urls")),  # the operator console's pages
    path("admin/", admin.site.urls),
    path("", include("agents.email.urls")),
]
