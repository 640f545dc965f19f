from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from dossiers.models import AuditAction, AuditLog, Consent, ConsentChange, Contact
from dossiers.retention import contact_forget
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

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # erasure goes one contact at a time, confirmed
        return actions

    def delete_view(self, request: HttpRequest, object_id: str, extra_context=None) -> HttpResponse:
        """Delete is erasure: a page listing what will go (the same list as
        ``forget_contact --dry-run``), then ``contact_forget`` on confirmation."""
        if not self.has_delete_permission(request):
            request.refused_permission = "dossiers.delete_contact"  # for the audit row
            raise PermissionDenied
        contact = self.get_object(request, object_id)
        if contact is None:
            raise Http404("No such contact.")
        actor = f"operator:{request.user.get_username()}"
        if request.method == "POST" and request.POST.get("post") == "yes":
            report = contact_forget(contact_id=contact.pk, actor=actor)
            self.message_user(request, f"Contact {report.contact_id} erased: {sum(report.counts.values())} "
                              f"records and {len(report.files)} files; the audit log keeps the counts.",
                              messages.SUCCESS)  # fmt: skip
            return HttpResponseRedirect(reverse("admin:dossiers_contact_changelist"))
        plan = contact_forget(contact_id=contact.pk, actor=actor, dry_run=True)
        context = {
            **self.admin_site.each_context(request),
            "title": "Erase a contact",
            "opts": self.opts,
            "contact": contact,
            "plan": plan,
            "rows": [(kind.replace("_", " "), count) for kind, count in plan.counts.items()],
        }
        return TemplateResponse(request, "dossiers/contact_erase.html", context)

    def delete_model(self, request, obj) -> None:
        contact_forget(contact_id=obj.pk, actor=f"operator:{request.user.get_username()}")

    def delete_queryset(self, request, queryset) -> None:
        for contact_id in queryset.values_list("pk", flat=True):
            contact_forget(contact_id=contact_id, actor=f"operator:{request.user.get_username()}")

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
