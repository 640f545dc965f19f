from datetime import UTC

import django_filters
from django import forms

from orchestrator.models import Channel, Task
from orchestrator.states import TaskStatus


class TextFilter(django_filters.CharFilter):
    """A text filter that refuses NUL characters (PostgreSQL cannot compare them)."""

    def filter(self, qs, value):
        if value and "\x00" in value:
            raise forms.ValidationError("must not contain NUL characters")
        return super().filter(qs, value)


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO 8601 with any offset, compared in UTC (PostgreSQL refuses offsets past ±15:59)."""

    def filter(self, qs, value):
        if value is not None:
            try:
                value = value.astimezone(UTC)
            except (OverflowError, ValueError):
                raise forms.ValidationError("out of range") from None
        return super().filter(qs, value)


class TaskFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=TaskStatus.choices)
    channel = django_filters.MultipleChoiceFilter(choices=Channel.choices)
    type = TextFilter()
    contact = django_filters.UUIDFilter(field_name="contact_id")
    correlation_id = TextFilter()
    provider_id = TextFilter()
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Task
        fields = ["status", "channel", "type", "contact", "correlation_id", "provider_id"]
