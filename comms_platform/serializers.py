"""DRF serializer pieces every app's API shares (a leaf: it imports no app)."""

from __future__ import annotations

from rest_framework import serializers


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
