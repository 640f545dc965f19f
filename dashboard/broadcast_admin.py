"""Broadcasts and their recipients in the admin: read-only lists with filters. A broadcast is
created, paused, resumed and cancelled from its console page (``/admin/broadcasts/``), which
goes through the broadcasts' services; the admin changes nothing."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from broadcasts.models import Broadcast, Recipient


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Broadcast)
class BroadcastAdmin(ReadOnly):
    list_display = ["name", "channel", "status", "total", "rejected", "created_at", "created_by", "watch"]
    list_filter = ["status", "channel"]
    search_fields = ["name", "created_by", "source"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    exclude = ["request_hash"]

    @admin.display(description="")
    def watch(self, obj: Broadcast) -> str:
        recipients = reverse("admin:broadcasts_recipient_changelist") + f"?broadcast__id__exact={obj.pk}"
        return format_html('<a href="{}">Watch</a> · <a href="{}">Recipients</a>',
                           reverse("dashboard:broadcast", args=[obj.pk]), recipients)  # fmt: skip


@admin.register(Recipient)
class RecipientAdmin(ReadOnly):
    list_display = [
        "address",
        "broadcast",
        "line",
        "status",
        "reason",
        "provider_id",
        "sent_at",
        "updated_at",
    ]
    list_filter = ["status"]
    list_select_related = ["broadcast"]
    search_fields = ["=address", "=provider_id"]
    raw_id_fields = ["broadcast", "contact"]
    show_full_result_count = False
    ordering = ["broadcast", "line"]
