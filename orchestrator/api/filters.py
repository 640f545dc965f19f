import django_filters

from orchestrator.models import Channel, Task
from orchestrator.states import TaskStatus


class TaskFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=TaskStatus.choices)
    channel = django_filters.MultipleChoiceFilter(choices=Channel.choices)
    type = django_filters.CharFilter()
    contact = django_filters.UUIDFilter(field_name="contact_id")
    correlation_id = django_filters.CharFilter()
    provider_id = django_filters.CharFilter()
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Task
        fields = ["status", "channel", "type", "contact", "correlation_id", "provider_id"]
