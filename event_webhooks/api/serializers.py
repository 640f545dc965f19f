from __future__ import annotations

from rest_framework import serializers

from comms_platform.events import EVENT_TYPES
from comms_platform.serializers import PublicUrlField
from event_webhooks.models import WebhookDelivery, WebhookEndpoint


class EventTypeField(serializers.ChoiceField):
    """One event type; an unknown one is code ``unknown_event_type`` (the message lists the known)."""

    def to_internal_value(self, data):
        if str(data) not in self.choices:
            raise serializers.ValidationError(
                f"Unknown event type {data!r}. Known: {', '.join(EVENT_TYPES)}.", code="unknown_event_type"
            )
        return str(data)


class EndpointSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(
        child=EventTypeField(choices=EVENT_TYPES), allow_empty=False, max_length=len(EVENT_TYPES)
    )
    url = PublicUrlField()

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "description", "event_types", "enabled", "disabled_reason", "failing_since",
                  "previous_secret_expires_at", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["id", "disabled_reason", "failing_since", "previous_secret_expires_at",
                            "created_at", "updated_at"]  # fmt: skip


class EndpointCreatedSerializer(EndpointSerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown once: store it now.")

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]


class RotateSerializer(serializers.Serializer):
    overlap_seconds = serializers.IntegerField(min_value=0, max_value=7 * 86400, required=False,
                                               help_text="How long the previous secret keeps signing too.")  # fmt: skip


class RotatedSerializer(serializers.Serializer):
    secret = serializers.CharField(read_only=True)
    previous_secret_expires_at = serializers.DateTimeField(read_only=True, allow_null=True)


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = ["id", "webhook_id", "event_type", "status", "attempts", "next_attempt_at", "last_status_code",
                  "last_error", "created_at", "delivered_at", "payload"]  # fmt: skip
        read_only_fields = fields
