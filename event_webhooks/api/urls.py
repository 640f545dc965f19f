from django.urls import path

from event_webhooks.api import views

urlpatterns = [
    path("callback-secret/rotate/", views.CallbackSecretRotateView.as_view(), name="callback-secret-rotate"),
    path("webhook-endpoints/", views.EndpointListCreateView.as_view(), name="webhook-endpoint-list"),
    path("webhook-endpoints/<uuid:pk>/", views.EndpointDetailView.as_view(), name="webhook-endpoint-detail"),
    path(
        "webhook-endpoints/<uuid:pk>/rotate-secret/",
        views.EndpointRotateView.as_view(),
        name="webhook-endpoint-rotate",
    ),
    path(
        "webhook-endpoints/<uuid:pk>/deliveries/",
        views.EndpointDeliveriesView.as_view(),
        name="webhook-endpoint-deliveries",
    ),
]
