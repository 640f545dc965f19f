"""The broadcasts API: the tasks API's keys, throttling and error shape (orchestrator/api)."""

from __future__ import annotations

import csv
from collections.abc import Iterator

from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import BaseParser, FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from broadcasts import services
from broadcasts.api.serializers import (
    BroadcastCreatedSerializer,
    BroadcastCreateSerializer,
    BroadcastSerializer,
)
from broadcasts.errors import BroadcastError, IdempotencyConflict, IllegalBroadcastTransition
from broadcasts.models import Broadcast
from broadcasts.selectors import recipients_csv_rows
from orchestrator.api.errors import error_body
from orchestrator.api.parsers import BoundedJSONParser
from orchestrator.api.permissions import deny, key_of, require_perm
from orchestrator.api.views import IDEMPOTENCY_HEADER, actor_of, source_of

VIEW, ADD, CHANGE = "broadcasts.view_broadcast", "broadcasts.add_broadcast", "broadcasts.change_broadcast"


class BroadcastJSONParser(BaseParser):
    """JSON up to BROADCAST_MAX_BODY_BYTES. Not a JSONParser subclass on purpose: DRF reads a
    JSONParser's body through ``request.body``, which Django caps at DATA_UPLOAD_MAX_MEMORY_SIZE
    (2.5 MB); this parser reads the stream itself, with the bounded parser's checks."""

    media_type = "application/json"
    limit_setting = "BROADCAST_MAX_BODY_BYTES"
    parse = BoundedJSONParser.parse


def _broadcast_for(request: Request, pk, *, write: bool = False) -> Broadcast:
    """Another client's broadcast is a 404, as for tasks."""
    broadcast = get_object_or_404(Broadcast, pk=pk)
    key = key_of(request)
    if key is None:
        require_perm(request, CHANGE if write else VIEW)
    elif key.is_agent or (not key.all_tasks and broadcast.source != key.source):
        raise Http404
    return broadcast


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_lines(rows: Iterator[list]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    for row in rows:
        yield writer.writerow(row)


class BroadcastCreateView(APIView):
    parser_classes = [BroadcastJSONParser]

    @extend_schema(
        request=BroadcastCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                location=OpenApiParameter.HEADER,
                required=False,
                description="Same key and body: the first broadcast comes back (200). "
                "Same key, other body: 409.",
            )
        ],
        responses={
            201: BroadcastCreatedSerializer,
            200: BroadcastCreatedSerializer,
            400: OpenApiResponse(description="invalid (the field, or 'recipients' when none is valid)"),
            409: OpenApiResponse(description="Idempotency-Key reused with another body"),
        },
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        serializer = BroadcastCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = key_of(request)
        if key is None:
            require_perm(request, ADD)
        elif key.is_agent or not key.may_create(task_type := _task_type(data["channel"])):
            raise deny(request, f"type:{task_type}", f"This API key may not send {data['channel']}.")
        idempotency_key = request.META.get(IDEMPOTENCY_HEADER) or ""
        if len(idempotency_key) > 255:
            raise ValidationError({"Idempotency-Key": ["At most 255 characters."]})
        try:
            result = services.broadcast_create(
                name=data["name"], channel=data["channel"], body=data["body"], template=data["template"],
                prompt=data["prompt"], subject=data["subject"], html=data["html"], recipients=data.get("recipients"), contact_list=data.get("contact_list"),
                contact_filter=data.get("contact_filter"), scheduled_for=data["scheduled_for"],
                rate_per_second=data["rate_per_second"], senders=data["senders"] or None,
                quiet_start=data["quiet_start"], quiet_end=data["quiet_end"],
                idempotency_key=idempotency_key, source=source_of(request), created_by=actor_of(request),
            )  # fmt: skip
        except IdempotencyConflict as exc:
            return Response(error_body("idempotency_conflict", str(exc)), status=status.HTTP_409_CONFLICT)
        except BroadcastError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        body = BroadcastSerializer(result.broadcast).data
        body["rejected"] = result.rejected
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


def _task_type(channel: str) -> str:
    """The task type an API key must be allowed to create to send this broadcast."""
    return "notify" if channel == "notify" else f"{channel}.send"


class BroadcastDetailView(APIView):
    @extend_schema(responses=BroadcastSerializer)
    def get(self, request: Request, pk) -> Response:
        return Response(BroadcastSerializer(_broadcast_for(request, pk)).data)


class _ControlView(APIView):
    parser_classes = [BoundedJSONParser, FormParser, MultiPartParser]
    control = staticmethod(services.broadcast_pause)

    @extend_schema(
        request=None, responses={200: BroadcastSerializer, 409: OpenApiResponse(description="not now")}
    )
    def post(self, request: Request, pk) -> Response:
        broadcast = _broadcast_for(request, pk, write=True)
        try:
            broadcast = self.control(broadcast, actor=actor_of(request))
        except IllegalBroadcastTransition as exc:
            return Response(error_body("conflict", str(exc)), status=status.HTTP_409_CONFLICT)
        return Response(BroadcastSerializer(broadcast).data)


class BroadcastPauseView(_ControlView):
    control = staticmethod(services.broadcast_pause)


class BroadcastResumeView(_ControlView):
    control = staticmethod(services.broadcast_resume)


class BroadcastCancelView(_ControlView):
    control = staticmethod(services.broadcast_cancel)


class BroadcastRecipientsCsvView(APIView):
    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request, pk):
        broadcast = _broadcast_for(request, pk)
        response = StreamingHttpResponse(_csv_lines(recipients_csv_rows(broadcast)), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="broadcast-{broadcast.id}.csv"'
        return response
