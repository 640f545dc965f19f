from django.contrib import admin

from dossiers.models import AuditAction, AuditLog, Consent, ConsentChange, Contact
from dossiers.services import audit_record


class ConsentInline(admin.TabularInline):
    model = Consent
    extra = 0
    can_delete = False
    fields = ["channel", "status", "source", "changed_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # changed through consent_set (API or agents), which keeps the history


class ConsentChangeInline(admin.TabularInline):
    model = ConsentChange
    extra = 0
    can_delete = False
    fields = ["created_at", "channel", "status", "source", "detail", "actor"]
    readonly_fields = fields
    ordering = ["-created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["name", "phone", "email", "locale", "timezone", "created_at"]
    search_fields = ["name", "phone", "email", "whatsapp"]
    show_full_result_count = False
    inlines = [ConsentInline, ConsentChangeInline]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Opening a contact shows its personal data: that is audited."""
        response = super().change_view(request, object_id, form_url, extra_context)
        if request.method == "GET" and response.status_code == 200:
            audit_record(actor=request.user.get_username(), action=AuditAction.VIEW_DOSSIER,
                         object_type="contact", object_id=object_id, details={"via": "admin"})  # fmt: skip
        return response


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is written by the code, never edited."""

    list_display = ["at", "actor", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["=object_id", "actor"]
    date_hierarchy = "at"
    show_full_result_count = False
    readonly_fields = ["at", "actor", "action", "object_type", "object_id", "details"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
