from django.contrib import admin

from agents.messaging.models import MessageTemplate, SendAttempt


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
