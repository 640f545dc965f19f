from __future__ import annotations

import copy
import json
from datetime import UTC

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from comms_platform.serializers import PublicUrlField, StrictFieldsMixin
from dossiers.models import Contact
from orchestrator import registry
from orchestrator.models import Task, TaskEvent
from orchestrator.states import TaskStatus

S = TaskStatus
AGENT_REPORTABLE = [S.DISPATCHED, S.IN_PROGRESS, S.SUCCEEDED, S.FAILED]


class ContactFieldMixin:
    """An optional ``contact`` id that must exist; the contact is kept in the context for the
    type-specific validators."""

    def validate_contact(self, value):
        if value is None:
            return None
        contact = Contact.objects.filter(id=value).first()
        if contact is None:
            raise serializers.ValidationError(f"No contact with id {value}.")
        self.context["contact"] = contact
        return value


class CallbackUrlField(PublicUrlField):
    """A task's one-off ``callback_url`` (optional; codes ``invalid_url``, ``url_refused``)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("default", "")
        kwargs.setdefault("help_text", "This task's events are delivered here too, signed with the API key's "
                                       "callback secret (docs/webhooks.md).")  # fmt: skip
        super().__init__(**kwargs)


def check_callback_owner(source: str, callback_url: str) -> None:
    """A callback is signed with the API key's callback secret: a session has none."""
    if callback_url and not source.startswith("key:"):
        raise serializers.ValidationError(
            {"callback_url": [serializers.ErrorDetail("A callback_url needs an API key (its callback secret "
                                                      "signs the deliveries).", code="callback_needs_api_key")]}
        )  # fmt: skip


class ShallowFieldsMixin:
    """DRF deep-copies every declared field for each serializer instance, which was a third
    of intake's validation time. Declared fields are never changed after the class is
    built, so a shallow copy per instance, which ``bind()`` then names, is enough."""

    def get_fields(self):
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}


class TaskCreateSerializer(StrictFieldsMixin, ContactFieldMixin, ShallowFieldsMixin, serializers.Serializer):
    type = serializers.CharField(max_length=64, help_text="A registered task type, e.g. sms.send.")
    contact = serializers.UUIDField(required=False, allow_null=True, default=None)
    correlation_id = serializers.CharField(max_length=128, required=False, allow_blank=True, default="")
    payload = serializers.DictField(
        required=False, default=dict, help_text="Type-specific input (a JSON object)."
    )
    priority = serializers.IntegerField(min_value=0, max_value=9, required=False, default=5)
    scheduled_for = serializers.DateTimeField(required=False, allow_null=True, default=None)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    callback_url = CallbackUrlField()

    def validate_type(self, value: str) -> str:
        route = registry.get_route(value)
        if route is None or not route.enabled:
            known = ", ".join(registry.known_task_types()) or "(none)"
            raise serializers.ValidationError(f"Unknown task type {value!r}. Known types: {known}.")
        return value

    def validate_payload(self, value: dict) -> dict:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > settings.TASK_PAYLOAD_MAX_BYTES:
            raise serializers.ValidationError(
                f"The payload is {size} bytes; the limit is {settings.TASK_PAYLOAD_MAX_BYTES}."
            )
        return value

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("expires_at is in the past.")
        return value

    def validate(self, attrs):
        if attrs["expires_at"] and attrs["scheduled_for"] and attrs["expires_at"] <= attrs["scheduled_for"]:
            raise serializers.ValidationError({"expires_at": ["expires_at must be after scheduled_for."]})
        try:
            attrs["payload"] = registry.validate_payload(
                attrs["type"], attrs["payload"], self.context.get("contact")
            )
        except serializers.ValidationError as exc:
            detail = exc.detail if isinstance(exc.detail, dict) else {"payload": exc.detail}
            raise serializers.ValidationError(detail) from None
        return attrs


class TaskEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskEvent
        fields = ["from_status", "to_status", "applied", "actor", "channel", "details", "created_at"]


class TaskSerializer(serializers.ModelSerializer):
    # Empty when the task has none: a URL or "", which the schema's "uri" format does not allow.
    callback_url = serializers.CharField(
        read_only=True, help_text="the task's one-off callback URL, or empty"
    )

    class Meta:
        model = Task
        fields = [
            "id", "type", "channel", "status", "contact", "correlation_id", "payload", "priority",
            "scheduled_for", "expires_at", "agent", "attempts", "provider_id", "result", "error_code",
            "error_message", "parent", "idempotency_key", "callback_url", "created_at", "updated_at",
            "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


def _iso(value) -> str | None:
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def task_as_dict(task: Task) -> dict:
    """TaskSerializer's output, built directly: intake answers with it on every request and
    a ModelSerializer costs more to instantiate than the rest of the response."""
    return {
        "id": str(task.id),
        "type": task.type,
        "channel": task.channel,
        "status": task.status,
        "contact": str(task.contact_id) if task.contact_id else None,
        "correlation_id": task.correlation_id,
        "payload": task.payload,
        "priority": task.priority,
        "scheduled_for": _iso(task.scheduled_for),
        "expires_at": _iso(task.expires_at),
        "agent": task.agent,
        "attempts": task.attempts,
        "provider_id": task.provider_id,
        "result": task.result,
        "error_code": task.error_code,
        "error_message": task.error_message,
        "parent": str(task.parent_id) if task.parent_id else None,
        "idempotency_key": task.idempotency_key,
        "callback_url": task.callback_url,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
        "finished_at": _iso(task.finished_at),
    }


class TaskDetailSerializer(TaskSerializer):
    events = TaskEventSerializer(many=True, read_only=True)

    class Meta(TaskSerializer.Meta):
        fields = [*TaskSerializer.Meta.fields, "events"]
        read_only_fields = fields


class TaskPatchSerializer(StrictFieldsMixin, serializers.Serializer):
    """What an agent reports: the new status and what the provider said."""

    status = serializers.ChoiceField(choices=[(s.value, s.label) for s in AGENT_REPORTABLE])
    provider_id = serializers.CharField(max_length=128, required=False)
    result = serializers.DictField(required=False)
    error_code = serializers.CharField(max_length=64, required=False)
    error_message = serializers.CharField(max_length=2000, required=False)
    details = serializers.DictField(required=False)


class TaskCancelSerializer(StrictFieldsMixin, serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


def _component_name(task_type: str) -> str:
    return "".join(part.capitalize() for part in task_type.replace("_", ".").split(".")) + "TaskCreate"


_variants: dict[str, type] = {}


def task_create_variants() -> dict[str, type]:
    """One ``TaskCreate`` serializer per task type with a documented payload (the registry's
    payload schemas): the OpenAPI union on ``type`` of ``POST /api/tasks/``."""
    for task_type, spec in registry.payload_schemas().items():
        if task_type not in _variants:
            _variants[task_type] = type(_component_name(task_type), (TaskCreateSerializer,), {
                "type": serializers.ChoiceField(choices=[task_type]),
                "payload": spec.serializer(required=False, help_text=(spec.serializer.__doc__ or "").strip()),
                "__doc__": f"Create a {task_type} task.",
            })  # fmt: skip
    return dict(_variants)
