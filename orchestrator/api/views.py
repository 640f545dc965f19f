"""The tasks API. Views validate and call services; they hold no business logic."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from comms_platform.celery import app as celery_app
from orchestrator import services
from orchestrator.api.errors import error_body
from orchestrator.api.filters import TaskFilter
from orchestrator.api.parsers import BoundedJSONParser
from orchestrator.api.permissions import deny, key_of, task_check, task_create_check, tasks_visible
from orchestrator.api.serializers import (
    TaskCancelSerializer,
    TaskCreateSerializer,
    TaskDetailSerializer,
    TaskPatchSerializer,
    TaskSerializer,
    check_callback_owner,
    task_as_dict,
    task_create_variants,
)
from orchestrator.models import Task
from orchestrator.states import IllegalTransition

IDEMPOTENCY_HEADER = "HTTP_IDEMPOTENCY_KEY"


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class IsAgentOrStaff(permissions.BasePermission):
    message = "Only agents (an API key with the agent role) and staff may report task progress."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and (getattr(user, "is_agent", False) or getattr(user, "is_staff", False)))


class TaskCursorPagination(CursorPagination):
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:  # DRF answers 404 for a bad cursor; it is bad input
            raise ValidationError(
                {"cursor": ["Invalid cursor: use the next/previous links as given."]}
            ) from None


def source_of(request: Request) -> str:
    user = request.user
    return getattr(user, "source", None) or f"user:{user.pk}"


def actor_of(request: Request) -> str:
    user = request.user
    return f"api:{getattr(user, 'name', None) or user.get_username()}"


class TaskListCreateView(generics.ListAPIView):
    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    filterset_class = TaskFilter
    pagination_class = TaskCursorPagination

    def get_queryset(self):
        """A client key's own tasks, an agent key's agent's, everything for a person with the permission."""
        return tasks_visible(self.request, super().get_queryset())

    @extend_schema(
        # A union on ``type``: each task type's payload is its own component (the serializers
        # intake checks payloads with), each with an example (orchestrator/api/schema.py).
        request=PolymorphicProxySerializer(component_name="TaskCreate", serializers=task_create_variants,
                                           resource_type_field_name="type"),
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                location=OpenApiParameter.HEADER,
                required=False,
                description="Same key and body: the first task comes back (200). Same key, other body: 409.",
            )
        ],
        responses={201: TaskSerializer, 200: TaskSerializer, 400: OpenApiResponse(description="invalid"),
                   409: OpenApiResponse(description="Idempotency-Key reused with another body")},
    )  # fmt: skip
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        if isinstance(request.data.get("type"), str):
            task_create_check(request, request.data["type"])
        serializer = TaskCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        check_callback_owner(source_of(request), data["callback_url"])
        key = request.META.get(IDEMPOTENCY_HEADER) or None
        if key is not None and len(key) > 255:
            raise ValidationError({"Idempotency-Key": ["At most 255 characters."]})
        try:
            task, created = services.task_create(
                type=data["type"],
                payload=data["payload"],
                contact_id=data["contact"],
                correlation_id=data["correlation_id"],
                priority=data["priority"],
                scheduled_for=data["scheduled_for"],
                expires_at=data["expires_at"],
                source=source_of(request),
                idempotency_key=key,
                digest=services.request_digest(request.data) if key else "",
                callback_url=data["callback_url"],
            )
        except services.IdempotencyConflict as exc:
            return Response(
                error_body("idempotency_conflict", str(exc), task=str(exc.task.id)),
                status=status.HTTP_409_CONFLICT,
            )
        except services.UnknownTaskType as exc:  # disabled between validation and now
            raise ValidationError({"type": [f"Unknown task type {exc.task_type!r}."]}) from None
        if created and celery_app.conf.task_always_eager and not settings.DISPATCH_IN_BACKGROUND:
            task.refresh_from_db()  # the handler already ran in this process: show where it got
        return Response(task_as_dict(task), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class TaskDetailView(APIView):
    def get_permissions(self):
        if self.request.method == "PATCH":
            return [permissions.IsAuthenticated(), IsAgentOrStaff()]
        return super().get_permissions()

    @extend_schema(responses=TaskDetailSerializer)
    def get(self, request: Request, pk) -> Response:
        task = get_object_or_404(Task.objects.prefetch_related("events"), pk=pk)
        task_check(request, task)
        return Response(TaskDetailSerializer(task).data)

    @extend_schema(request=TaskPatchSerializer, responses={200: TaskDetailSerializer, 409: OpenApiResponse()})
    def patch(self, request: Request, pk) -> Response:
        task_check(request, get_object_or_404(Task.objects.only("id", "agent", "source"), pk=pk), write=True)
        serializer = TaskPatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            outcome = services.task_transition(
                task_id=pk,
                to=data["status"],
                actor=actor_of(request),
                details=data.get("details"),
                provider_id=data.get("provider_id"),
                result=data.get("result"),
                error_code=data.get("error_code"),
                error_message=data.get("error_message"),
            )
        except IllegalTransition as exc:
            raise Conflict(f"Illegal transition {exc.current} → {exc.target}.") from None
        task = Task.objects.prefetch_related("events").get(pk=pk)
        body = TaskDetailSerializer(task).data
        body["applied"] = outcome.applied
        return Response(body)


class TaskCancelView(APIView):
    # A bare POST (no body, or a form) is the usual way to cancel; JSON may carry a reason.
    parser_classes = [BoundedJSONParser, FormParser, MultiPartParser]

    @extend_schema(request=TaskCancelSerializer, responses={200: TaskSerializer, 409: OpenApiResponse()})
    def post(self, request: Request, pk) -> Response:
        task = get_object_or_404(Task.objects.only("id", "agent", "source"), pk=pk)
        key = key_of(request)
        if key is not None and key.is_agent:
            raise deny(request, "client key", "An agent reports a task failed; it does not cancel it.")
        task_check(request, task, write=True)
        serializer = TaskCancelSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        try:
            outcome = services.task_cancel(
                task_id=pk, actor=actor_of(request), reason=serializer.validated_data["reason"]
            )
        except IllegalTransition as exc:
            raise Conflict(f"The task is {exc.current}; it can no longer be cancelled.") from None
        if not outcome.applied:
            raise Conflict(f"The task is {outcome.task.status}; it can no longer be cancelled.")
        return Response(TaskSerializer(outcome.task).data)
