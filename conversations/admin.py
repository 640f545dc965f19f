"""Conversations in the admin: the records, labels, operators' availability."""

from django.contrib import admin

from conversations.models import Conversation, ConversationEvent, Label, Operator, PrivateNote


class NoteInline(admin.TabularInline):
    model = PrivateNote
    extra = 0
    readonly_fields = ["author", "body", "created_at"]
    can_delete = False


class EventInline(admin.TabularInline):
    model = ConversationEvent
    extra = 0
    readonly_fields = ["kind", "actor", "details", "created_at"]
    can_delete = False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["contact", "channel", "status", "assignee", "unread", "waiting_since", "sla_breached"]
    list_filter = ["status", "channel", "sla_breached", "labels"]
    list_select_related = ["contact", "assignee"]
    raw_id_fields = ["contact", "assignee"]
    readonly_fields = ["first_customer_message_at", "last_customer_message_at", "last_reply_at", "waiting_since",
                       "first_response_at", "first_response_seconds", "sla_due_at", "resolved_at"]  # fmt: skip
    inlines = [NoteInline, EventInline]
    show_full_result_count = False

    # State changes go through conversations.services (events, task finishing), not the form.
    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ["name", "color"]


@admin.register(Operator)
class OperatorAdmin(admin.ModelAdmin):
    list_display = ["user", "available", "capacity", "phone", "last_assigned_at"]
    list_editable = ["available", "capacity"]
    list_select_related = ["user"]
