from __future__ import annotations

import zoneinfo
from datetime import UTC

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from comms_platform.serializers import StrictFieldsMixin
from dossiers.models import ConsentChannel, ConsentStatus, Contact
from dossiers.services import InvalidPhoneNumber, normalize_phone


class ContactCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    region = serializers.CharField(
        max_length=2, required=False, default="",
        help_text="ISO country of a phone number in national form (default PHONE_DEFAULT_REGION).",
    )  # fmt: skip
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    whatsapp = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    locale = serializers.CharField(max_length=16, required=False, allow_blank=True, default="")
    timezone = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    synthetic = serializers.BooleanField(
        required=False, default=False,
        help_text="a smoke-test contact: kept out of the inbound queue, erased an hour after creation",
    )  # fmt: skip

    def validate_timezone(self, value: str) -> str:
        if value and value not in zoneinfo.available_timezones():
            raise serializers.ValidationError(f"{value!r} is not an IANA time zone (e.g. Europe/Paris).")
        return value

    def validate(self, attrs):
        region = (attrs.pop("region") or settings.PHONE_DEFAULT_REGION).upper()
        if attrs["phone"]:
            attrs["phone"] = self._phone(attrs["phone"], region, "phone")
        if attrs["whatsapp"]:
            attrs["whatsapp"] = "whatsapp:" + self._phone(attrs["whatsapp"], region, "whatsapp")
        if not attrs["phone"] and not attrs["email"]:
            raise serializers.ValidationError({"phone": ["Give a phone number or an email address."]})
        return attrs

    @staticmethod
    def _phone(raw: str, region: str, field: str) -> str:
        try:
            return normalize_phone(raw, region=region)
        except InvalidPhoneNumber as exc:
            raise serializers.ValidationError(
                {field: [f"{exc} Or give the region."]}, code=exc.code
            ) from None


class ContactSerializer(serializers.ModelSerializer):
    consents = serializers.SerializerMethodField()
    avatar_url = serializers.SerializerMethodField()
    timeline_url = serializers.SerializerMethodField()

    class Meta:
        model = Contact
        fields = [
            "id", "name", "phone", "email", "whatsapp", "locale", "timezone", "email_undeliverable", "synthetic",
            "consents", "avatar_url", "timeline_url", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_consents(self, contact: Contact) -> dict[str, str]:
        current = {c.channel: c.status for c in contact.consents.all()}  # prefetched
        return {channel: current.get(channel, ConsentStatus.UNKNOWN) for channel in ConsentChannel.values}

    def get_avatar_url(self, contact: Contact) -> str:
        return reverse("contact-avatar", args=[contact.id])

    def get_timeline_url(self, contact: Contact) -> str:
        return reverse("contact-timeline", args=[contact.id])


class ConsentChangeSerializer(StrictFieldsMixin, serializers.Serializer):
    channel = serializers.ChoiceField(choices=ConsentChannel.choices)
    status = serializers.ChoiceField(choices=ConsentStatus.choices)
    detail = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class TimelineQuerySerializer(serializers.Serializer):
    """Query parameters; list values are comma-separated (``channel=sms,email``)."""

    channel = serializers.CharField(required=False, default="")
    direction = serializers.CharField(required=False, default="")
    kind = serializers.CharField(required=False, default="")
    since = serializers.DateTimeField(required=False, default=None)
    until = serializers.DateTimeField(required=False, default=None)
    cursor = serializers.CharField(required=False, default="")
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)

    def _split(self, value: str, allowed: tuple[str, ...], name: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [v for v in items if v not in allowed]
        if unknown:
            raise serializers.ValidationError(
                {name: [f"Unknown value(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}."]}
            )
        return items

    def _utc(self, value, name: str):
        """In UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts."""
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise serializers.ValidationError({name: ["Out of range."]}) from None

    def validate(self, attrs):
        from dossiers.selectors import CHANNELS, DIRECTIONS, KINDS

        attrs["since"], attrs["until"] = (
            self._utc(attrs["since"], "since"),
            self._utc(attrs["until"], "until"),
        )

        attrs["channel"] = self._split(attrs["channel"], CHANNELS, "channel")
        attrs["direction"] = self._split(attrs["direction"], DIRECTIONS, "direction")
        attrs["kind"] = self._split(attrs["kind"], KINDS, "kind")
        if attrs["since"] and attrs["until"] and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"until": ["until must be after since."]})
        return attrs
