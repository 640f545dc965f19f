"""The operator console's pages for outbound webhooks: endpoints (enable, disable, rotate the
secret, their events), the delivery log (request, response code and time, attempts) and resend."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction

from comms_platform.events import EVENT_TYPES
from event_webhooks import services
from event_webhooks.models import EndpointEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint


class EndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    event_types = forms.MultipleChoiceField(choices=[(t, t) for t in EVENT_TYPES],
                                            widget=forms.CheckboxSelectMultiple)  # fmt: skip

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "event_types", "enabled"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        try:
            services.check_url(url)
        except services.InvalidEndpoint as exc:
            raise forms.ValidationError(str(exc)) from None
        return url


class EndpointEventInline(admin.TabularInline):
    model = EndpointEvent
    extra = 0
    can_delete = False
    fields = ["at", "kind", "detail", "actor"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    show_change_link = True
    fields = [
        "created_at",
        "event_type",
        "webhook_id",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
    ]
    readonly_fields = fields
    ordering = ["-created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).defer("payload")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ["url", "event_types", "enabled", "failing_since", "owner", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["url", "description"]
    readonly_fields = ["disabled_reason", "failing_since", "owner", "all_events", "previous_secret_expires_at",
                       "created_at"]  # fmt: skip
    inlines = [EndpointEventInline, DeliveryInline]
    actions = ["enable", "disable", "rotate_secret"]

    def save_model(self, request, obj, form, change) -> None:
        actor = f"user:{request.user.pk}"
        if change:
            enabled = form.cleaned_data.get("enabled")
            obj.enabled = WebhookEndpoint.objects.values_list("enabled", flat=True).get(pk=obj.pk)
            super().save_model(request, obj, form, change)
            if enabled != obj.enabled:
                services.endpoint_set_enabled(
                    endpoint=obj, enabled=enabled, actor=actor, reason="by an operator"
                )
            return
        endpoint, secret = services.endpoint_create(
            url=obj.url, event_types=form.cleaned_data["event_types"], description=obj.description,
            all_events=True, actor=actor,
        )  # fmt: skip
        obj.pk = endpoint.pk
        obj.secret_encrypted = endpoint.secret_encrypted
        messages.warning(
            request, f"The signing secret is {secret} — copy it now: it will not be shown again."
        )

    @admin.action(description="Enable selected endpoints", permissions=["change"])
    def enable(self, request, queryset) -> None:
        for endpoint in queryset:
            services.endpoint_set_enabled(endpoint=endpoint, enabled=True, actor=f"user:{request.user.pk}")
        messages.success(request, f"Enabled {len(queryset)} endpoint(s).")

    @admin.action(description="Disable selected endpoints", permissions=["change"])
    def disable(self, request, queryset) -> None:
        for endpoint in queryset:
            services.endpoint_set_enabled(endpoint=endpoint, enabled=False, actor=f"user:{request.user.pk}",
                                          reason="by an operator")  # fmt: skip
        messages.success(request, f"Disabled {len(queryset)} endpoint(s).")

    @admin.action(description="Rotate the signing secret (the old one signs too for the overlap)",
                  permissions=["change"])  # fmt: skip
    def rotate_secret(self, request, queryset) -> None:
        for endpoint in queryset:
            secret = services.endpoint_rotate_secret(endpoint=endpoint, actor=f"user:{request.user.pk}")
            messages.warning(request, f"{endpoint.url}: the new secret is {secret} — copy it now.")


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["at", "status_code", "duration_ms", "error", "request_headers", "response_body"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "event_type", "endpoint", "url", "status", "attempts", "last_status_code",
                    "next_attempt_at", "webhook_id"]  # fmt: skip
    list_filter = ["status", "event_type", ("endpoint", admin.EmptyFieldListFilter)]
    list_select_related = ["endpoint"]
    search_fields = ["webhook_id", "url"]
    readonly_fields = ["webhook_id", "endpoint", "url", "callback_owner", "event_type", "payload", "status", "attempts",
                       "next_attempt_at", "last_status_code", "last_error", "created_at", "delivered_at"]  # fmt: skip
    exclude = ["locked_until"]
    inlines = [AttemptInline]
    actions = ["resend"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Resend selected deliveries (same webhook-id)", permissions=["change"])
    def resend(self, request, queryset) -> None:
        with transaction.atomic():
            for delivery in queryset:
                services.delivery_resend(delivery=delivery, actor=f"user:{request.user.pk}")
        messages.success(request, f"Queued {len(queryset)} delivery(ies) again.")
