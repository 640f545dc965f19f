from django.contrib import admin, messages
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from orchestrator import registry, services
from orchestrator.api.auth import api_key_create, key_cache
from orchestrator.models import AgentRegistration, ApiKey, Digest, DigestItem, RoutingRule, Task, TaskEvent


class TaskEventInline(admin.TabularInline):
    model = TaskEvent
    extra = 0
    can_delete = False
    fields = ["created_at", "from_status", "to_status", "applied", "actor", "channel", "details"]
    readonly_fields = fields
    ordering = ["created_at", "id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "channel", "status", "contact", "agent", "attempts", "created_at"]
    list_filter = ["status", "channel", "type", "agent", "created_at"]
    search_fields = [
        "=id",
        "correlation_id",
        "provider_id",
        "contact__name",
        "contact__phone",
        "contact__email",
    ]
    list_select_related = ["contact"]
    raw_id_fields = ["contact", "parent"]
    show_full_result_count = False
    date_hierarchy = "created_at"
    inlines = [TaskEventInline]
    readonly_fields = [
        "id", "type", "channel", "status", "agent", "attempts", "lease_expires_at", "provider_id", "result",
        "error_code", "error_message", "source", "idempotency_key", "request_digest", "callback_url", "created_at",
        "updated_at", "finished_at",
    ]  # fmt: skip

    def has_add_permission(self, request) -> bool:
        return False  # tasks come through the API, inbound webhooks and the console's actions


@admin.register(AgentRegistration)
class AgentRegistrationAdmin(admin.ModelAdmin):
    list_display = [
        "task_type",
        "agent",
        "channel",
        "kind",
        "queue",
        "enabled",
        "dispatch_only",
        "last_heartbeat_at",
    ]
    list_filter = ["kind", "enabled", "channel"]
    list_editable = ["enabled"]
    search_fields = ["task_type", "agent"]

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        registry.invalidate()

    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        registry.invalidate()


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "role", "task_types", "contacts", "all_tasks", "webhooks", "agent_registration",
                    "expires_at", "last_used_at", "revoked_at"]  # fmt: skip
    list_filter = ["role", "contacts", "all_tasks", "revoked_at"]
    list_select_related = ["agent_registration"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    fields = ["name", "role", "task_types", "contacts", "all_tasks", "webhooks", "agent_registration", "expires_at",
              "prefix", "created_at", "last_used_at", "revoked_at"]  # fmt: skip
    actions = ["revoke"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "agent_registration":
            kwargs["queryset"] = AgentRegistration.objects.filter(kind="remote")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change) -> None:
        if change:
            super().save_model(request, obj, form, change)
            key_cache.clear()  # new scopes apply in this process at once, in others within the cache time
            return
        created, key = api_key_create(name=obj.name, role=obj.role, task_types=obj.task_types,
                                      contacts=obj.contacts, all_tasks=obj.all_tasks,
                                      agent_registration=obj.agent_registration, expires_at=obj.expires_at,
                                      webhooks=obj.webhooks)  # fmt: skip
        obj.pk = created.pk
        obj.prefix, obj.digest = created.prefix, created.digest
        messages.warning(
            request, f"The new key is {key} — copy it now: it is not stored and will not be shown again."
        )
        for label, value in getattr(created, "shown_once", {}).items():
            messages.warning(request, f"Its {label} is {value} — shown once too.")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        key_cache.clear()
        messages.success(request, f"Revoked {count} key(s).")


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "position", "enabled", "task_types", "channels", "channel_timeout_seconds",
                    "quiet_start", "quiet_end"]  # fmt: skip
    list_editable = ["position", "enabled"]
    search_fields = ["name"]


class DigestItemInline(admin.TabularInline):
    model = DigestItem
    extra = 0
    can_delete = False
    fields = ["task", "created_at"]
    readonly_fields = fields
    raw_id_fields = ["task"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Digest)
class DigestAdmin(admin.ModelAdmin):
    """Digests of notify tasks: open ones (collecting until ``closes_at``) and sent ones, with
    their item counts and the notify task that carried each one's message."""

    list_display = ["id", "key", "contact", "status", "item_count", "opens_at", "closes_at", "flushed_by",
                    "message_task"]  # fmt: skip
    list_filter = ["status", "flushed_by", "opens_at"]
    search_fields = ["key", "=contact__id", "contact__name", "contact__email", "contact__phone"]
    list_select_related = ["contact", "task"]
    raw_id_fields = ["contact", "task"]
    show_full_result_count = False
    date_hierarchy = "opens_at"
    inlines = [DigestItemInline]
    readonly_fields = ["contact", "key", "status", "opens_at", "closes_at", "item_count", "config", "task",
                       "flushed_at", "flushed_by", "created_at"]  # fmt: skip
    actions = ["flush_now"]

    @admin.display(description="message")
    def message_task(self, obj: Digest) -> str:
        if obj.task_id is None:
            return "—"
        url = reverse("admin:orchestrator_task_change", args=[obj.task_id])
        return format_html('<a href="{}">{}</a>', url, obj.task.status)

    def has_add_permission(self, request) -> bool:
        return False  # digests are opened by notify tasks that carry payload.digest

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # its item tasks wait for it; retention deletes old ones (manage.py apply_retention)

    @admin.action(description="Send the selected open digests now", permissions=["change"])
    def flush_now(self, request, queryset: QuerySet) -> None:
        ids = list(queryset.filter(status="open").values_list("id", flat=True))
        outcomes = [services.digest_flush(digest_id=i, by="admin", force=True) for i in ids]
        messages.success(request, f"Sent {outcomes.count('sent')} digest(s); {len(ids) - outcomes.count('sent')} "
                                  "had nothing left to send or were already sent.")  # fmt: skip
