"""``/api/webhook-endpoints/``: a key with the ``webhooks`` scope manages its own endpoints;
a signed-in person needs the matching ``event_webhooks`` permission and sees every endpoint."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from event_webhooks import services
from event_webhooks.api.serializers import (
    DeliverySerializer,
    EndpointCreatedSerializer,
    EndpointSerializer,
    RotatedSerializer,
    RotateSerializer,
)
from event_webhooks.models import WebhookDelivery, WebhookEndpoint
from orchestrator.api.permissions import deny, key_of, require_perm

PERMS = {"GET": "event_webhooks.view_webhookendpoint", "POST": "event_webhooks.add_webhookendpoint",
         "PATCH": "event_webhooks.change_webhookendpoint", "DELETE": "event_webhooks.delete_webhookendpoint"}  # fmt: skip


def actor_of(request: Request) -> str:
    key = key_of(request)
    return key.source if key else f"user:{request.user.pk}"


def _check(request: Request, method: str | None = None) -> None:
    key = key_of(request)
    if key is None:
        require_perm(request, PERMS.get(method or request.method, PERMS["PATCH"]))
    elif key.is_agent or not key.webhooks:
        raise deny(request, "webhooks", "This API key may not manage webhook endpoints (its webhooks scope).")


def _visible(request: Request):
    key = key_of(request)
    qs = WebhookEndpoint.objects.order_by("-created_at")
    return qs.filter(owner=key.source) if key else qs


def _invalid(exc: services.InvalidEndpoint) -> ValidationError:
    return ValidationError(
        {exc.field or "non_field_errors": [ValidationError(str(exc), code=exc.code).detail[0]]}
    )


class EndpointListCreateView(generics.ListAPIView):
    serializer_class = EndpointSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reading the schema
            return WebhookEndpoint.objects.none()
        _check(self.request)
        return _visible(self.request)

    @extend_schema(request=EndpointSerializer, responses={201: EndpointCreatedSerializer})
    def post(self, request: Request) -> Response:
        _check(request)
        serializer = EndpointSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = key_of(request)
        try:
            endpoint, secret = services.endpoint_create(
                url=data["url"], event_types=data["event_types"], description=data.get("description", ""),
                owner=key.source if key else "", all_events=key.all_tasks if key else True, actor=actor_of(request),
            )  # fmt: skip
        except services.InvalidEndpoint as exc:
            raise _invalid(exc) from None
        if data.get("enabled") is False:
            services.endpoint_set_enabled(
                endpoint=endpoint, enabled=False, actor=actor_of(request), reason="created disabled"
            )
        body = EndpointSerializer(endpoint).data | {"secret": secret}
        return Response(body, status=status.HTTP_201_CREATED)


class EndpointDetailView(APIView):
    serializer_class = EndpointSerializer

    def _get(self, request: Request, pk) -> WebhookEndpoint:
        _check(request)
        endpoint = _visible(request).filter(pk=pk).first()
        if endpoint is None:
            raise Http404
        return endpoint

    def get(self, request: Request, pk) -> Response:
        return Response(EndpointSerializer(self._get(request, pk)).data)

    @extend_schema(request=EndpointSerializer, responses={200: EndpointSerializer})
    def patch(self, request: Request, pk) -> Response:
        endpoint = self._get(request, pk)
        serializer = EndpointSerializer(endpoint, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            services.endpoint_update(endpoint=endpoint, actor=actor_of(request), url=data.get("url"),
                                     event_types=data.get("event_types"), description=data.get("description"),
                                     enabled=data.get("enabled"))  # fmt: skip
        except services.InvalidEndpoint as exc:
            raise _invalid(exc) from None
        endpoint.refresh_from_db()
        return Response(EndpointSerializer(endpoint).data)

    def delete(self, request: Request, pk) -> Response:
        self._get(request, pk).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateView(APIView):
    @extend_schema(request=RotateSerializer, responses={200: RotatedSerializer})
    def post(self, request: Request, pk) -> Response:
        _check(request, "PATCH")
        endpoint = _visible(request).filter(pk=pk).first()
        if endpoint is None:
            raise Http404
        serializer = RotateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        secret = services.endpoint_rotate_secret(endpoint=endpoint, actor=actor_of(request),
                                                 overlap_seconds=serializer.validated_data.get("overlap_seconds"))  # fmt: skip
        return Response({"secret": secret, "previous_secret_expires_at": endpoint.previous_secret_expires_at})


class EndpointDeliveriesView(generics.ListAPIView):
    serializer_class = DeliverySerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reading the schema
            return WebhookDelivery.objects.none()
        _check(self.request, "GET")
        endpoint = _visible(self.request).filter(pk=self.kwargs["pk"]).first()
        if endpoint is None:
            raise Http404
        return endpoint.deliveries.order_by("-created_at")


class CallbackSecretRotateView(APIView):
    """``POST /api/callback-secret/rotate/``: a new callback signing secret for this API key
    (its tasks' ``callback_url`` deliveries), shown once; the previous one keeps signing too
    for ``overlap_seconds``. Any client key may rotate its own; a person or an agent key may not."""

    @extend_schema(request=RotateSerializer, responses={200: RotatedSerializer})
    def post(self, request: Request) -> Response:
        key = key_of(request)
        if key is None or key.is_agent:
            raise deny(request, "client_key", "Only a client API key has a callback secret.")
        serializer = RotateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        secret = services.callback_secret_rotate(owner=key.source, actor=key.source,
                                                 overlap_seconds=serializer.validated_data.get("overlap_seconds"))  # fmt: skip
        expires = services.callback_secret_previous_expires_at(key.source)
        return Response({"secret": secret, "previous_secret_expires_at": expires})
