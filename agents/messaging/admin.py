from django.contrib import admin

from agents.messaging.models import InboundItem, MessageTemplate, SendAttempt


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "locale", "channel", "content_sid", "updated_at"]
    list_filter = ["channel", "locale"]
    search_fields = ["name", "body", "content_sid"]


@admin.register(SendAttempt)
class SendAttemptAdmin(admin.ModelAdmin):
    list_display = ["task", "number", "outcome", "provider_sid", "started_at", "finished_at"]
    list_filter = ["outcome"]
    raw_id_fields = ["task"]
    search_fields = ["provider_sid", "task__id"]
    show_full_result_count = False


@admin.register(InboundItem)
class InboundItemAdmin(admin.ModelAdmin):
    list_display = ["received_at", "channel", "contact", "status", "claimed_by"]
    list_filter = ["status", "channel"]
    list_select_related = ["contact"]
    raw_id_fields = ["task", "message", "contact"]
    show_full_result_count = False
