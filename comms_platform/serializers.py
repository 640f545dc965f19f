"""DRF serializer pieces every app's API shares (a leaf: it imports no app)."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from rest_framework import serializers

from comms_platform import outbound


class StrictFieldsMixin:
    """Refuse fields the serializer does not know, so a typo is an error, not a no-op."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: [f"Unknown field. Allowed fields: {', '.join(self.fields)}."] for name in unknown}
                )
        return super().to_internal_value(data)


class PublicUrlField(serializers.CharField):
    """A URL the platform will POST to (a webhook endpoint, a task's ``callback_url``): http(s)
    (else code ``invalid_url``), and in production never a private, loopback or link-local
    address (``comms_platform.outbound``; code ``url_refused``). One code per problem, the
    same on every endpoint."""

    default_error_messages = {"invalid": "Enter a valid http(s) URL."}

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("max_length", 2000)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value:
            try:
                URLValidator(schemes=["http", "https"])(value)
            except DjangoValidationError:
                raise serializers.ValidationError(
                    self.error_messages["invalid"], code="invalid_url"
                ) from None
            try:
                outbound.check_url(value)
            except outbound.OutboundRefused as exc:
                raise serializers.ValidationError(
                    f"This URL is refused: {exc}.", code="url_refused"
                ) from None
        return value
