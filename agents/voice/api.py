"""``POST /api/calls/``: place an outbound call with an LLM agent on it.

The body names a contact or an E.164 number, the agent's goal and persona, the greeting,
language, voice, maximum duration, recording and answering-machine detection, and a
correlation id. It creates a ``call.outbound`` task (handled on the ``voice`` queue) and
the call's dossier row, in one transaction.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.voice import services
from comms_platform.serializers import StrictFieldsMixin
from dossiers.models import ConsentStatus, Contact
from dossiers.services import (
    InvalidPhoneNumber,
    consent_status,
    contact_get_or_create_by_phone,
    normalize_phone,
)
from orchestrator import services as task_services
from orchestrator.api.errors import error_body
from orchestrator.api.permissions import task_create_check
from orchestrator.api.serializers import (
    CallbackUrlField,
    ContactFieldMixin,
    TaskSerializer,
    check_callback_owner,
)
from orchestrator.api.views import IDEMPOTENCY_HEADER, source_of

LANGUAGE_TAG = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"


class MachineDetectionField(serializers.ChoiceField):
    """``Enable`` / ``DetectMessageEnd`` (Twilio's values); ``true`` means Enable, ``false`` off."""

    def __init__(self, **kwargs) -> None:
        super().__init__(choices=["", "Enable", "DetectMessageEnd"], **kwargs)

    def to_internal_value(self, data):
        if data is True:
            return "Enable"
        if data is False or data is None:
            return ""
        return super().to_internal_value(data)


class CallPayloadSerializer(StrictFieldsMixin, serializers.Serializer):
    """The ``call.outbound`` payload; the context may carry the task's contact."""

    to = serializers.CharField(required=False, allow_blank=True, max_length=32,
                               help_text="E.164 number to call; defaults to the contact's phone.")  # fmt: skip
    goal = serializers.CharField(max_length=2000, help_text="What the agent must achieve on the call.")
    persona = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="",
                                    help_text="System prompt: who the agent is and how it talks.")  # fmt: skip
    greeting = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    language = serializers.RegexField(LANGUAGE_TAG, max_length=35, required=False)
    voice = serializers.CharField(max_length=100, required=False)
    max_duration_seconds = serializers.IntegerField(min_value=10, max_value=4 * 3600, required=False)
    record = serializers.BooleanField(required=False, default=False)
    machine_detection = MachineDetectionField(required=False, default="")

    def validate(self, attrs: dict) -> dict:
        contact: Contact | None = self.context.get("contact")
        raw = attrs.get("to") or (contact.phone if contact else "")
        if not raw:
            raise serializers.ValidationError(
                {"to": ["Give an E.164 number or a contact with a phone number."]}
            )
        try:
            attrs["to"] = normalize_phone(raw)
        except InvalidPhoneNumber as exc:
            raise serializers.ValidationError({"to": [str(exc)]}, code=exc.code) from None
        if contact and consent_status(contact_id=contact.id, channel="voice") == ConsentStatus.OPTED_OUT:
            raise serializers.ValidationError({"contact": ["This contact opted out of calls."]})
        attrs.setdefault("language", (contact.locale if contact and "-" in (contact.locale or "") else "")
                         or settings.VOICE_DEFAULT_LANGUAGE)  # fmt: skip
        attrs.setdefault("voice", settings.VOICE_DEFAULT_VOICE)
        attrs.setdefault("max_duration_seconds", settings.VOICE_MAX_DURATION_SECONDS)
        return attrs


class CallCreateSerializer(ContactFieldMixin, CallPayloadSerializer):
    contact = serializers.UUIDField(required=False, allow_null=True, default=None)
    correlation_id = serializers.CharField(max_length=128, required=False, allow_blank=True, default="")
    callback_url = CallbackUrlField()


def validate_call_payload(payload: dict, contact: Contact | None) -> dict:
    """The intake validator of ``call.outbound`` for ``POST /api/tasks/``."""
    serializer = CallPayloadSerializer(data=payload, context={"contact": contact})
    if not serializer.is_valid():
        raise serializers.ValidationError({"payload": serializer.errors})
    return dict(serializer.validated_data)


class CallCreateView(APIView):
    @extend_schema(request=CallCreateSerializer,
                   responses={201: TaskSerializer, 200: TaskSerializer, 400: OpenApiResponse(description="invalid"),
                              409: OpenApiResponse(description="Idempotency-Key reused with another body")})  # fmt: skip
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        task_create_check(request, "call.outbound")
        serializer = CallCreateSerializer(data=request.data, context={})
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        contact_id, correlation_id = data.pop("contact"), data.pop("correlation_id")
        callback_url = data.pop("callback_url")
        check_callback_owner(source_of(request), callback_url)
        key = request.META.get(IDEMPOTENCY_HEADER) or None
        try:
            with transaction.atomic():
                if contact_id is None:  # a call placed by number joins that number's dossier
                    contact_id = contact_get_or_create_by_phone(phone=data["to"])[0].id
                task, created = task_services.task_create(
                    type="call.outbound", payload=data, contact_id=contact_id, correlation_id=correlation_id,
                    source=source_of(request), idempotency_key=key,
                    digest=task_services.request_digest(request.data) if key else "",
                    callback_url=callback_url,
                )  # fmt: skip
                call = services.call_for_task(task_id=task.id)
                if call is None:
                    call = services.call_create(task_id=task.id, to=data["to"], contact_id=contact_id,
                                                from_address=settings.TWILIO_VOICE_CALLER_ID,
                                                correlation_id=correlation_id)  # fmt: skip
        except task_services.IdempotencyConflict as exc:
            return Response(error_body("idempotency_conflict", str(exc), task=str(exc.task.id)),
                            status=status.HTTP_409_CONFLICT)  # fmt: skip
        except task_services.UnknownTaskType:
            return Response(error_body("unavailable", "The voice agent is disabled."),
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)  # fmt: skip
        task.refresh_from_db()
        body = {**TaskSerializer(task).data, "call": {"id": call.id, "to": call.to_address, "from": call.from_address,
                                                      "status": call.status}}  # fmt: skip
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
