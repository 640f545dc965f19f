"""The console's admin: task and contact pages for operators, inbox settings.

The Task and Contact admins of orchestrator/dossiers are replaced here by subclasses, so
those apps' admin modules stay as they are.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from conversations.models import ConversationTask
from dashboard import (
    access,
    artifacts,
    broadcast_admin,  # noqa: F401  (registers Broadcast and Recipient, read only)
    presentation,
    selectors,
)
from dashboard import services as console_services
from dashboard.models import CannedResponse
from dossiers.admin import ContactAdmin
from dossiers.models import Artifact, Call, Contact, Email, Message
from orchestrator.admin import TaskAdmin
from orchestrator.models import Task
from orchestrator.services import NotRetryable
from orchestrator.states import FINAL, IllegalTransition


class ConsoleTaskAdmin(TaskAdmin):
    list_display = ["channel_col", "type", "status_col", "contact_col", "agent", "attempts", "age_col"]
    list_display_links = ["type"]
    list_filter = ["channel", "status", "type", "agent", ("created_at", admin.DateFieldListFilter)]
    list_select_related = ["contact"]
    list_per_page = 50
    show_full_result_count = False
    inlines: list[Any] = []
    change_form_template = "dashboard/task_change_form.html"
    search_help_text = "contact name, phone or email; correlation id; provider id; task id"

    @admin.display(description="", ordering="channel")
    def channel_col(self, obj: Task) -> str:
        return presentation.channel_icon(obj.channel)

    @admin.display(description="status", ordering="status")
    def status_col(self, obj: Task) -> str:
        return presentation.status_badge(obj.status)

    @admin.display(description="contact", ordering="contact__name")
    def contact_col(self, obj: Task) -> str:
        return presentation.contact_chip(obj.contact)

    @admin.display(description="age", ordering="created_at")
    def age_col(self, obj: Task) -> str:
        return presentation.age(obj.created_at)

    def get_urls(self):
        urls = super().get_urls()
        wrap = self.admin_site.admin_view
        return [
            path(
                "<uuid:object_id>/retry/", wrap(require_POST(self.retry_view)), name="orchestrator_task_retry"
            ),
            path(
                "<uuid:object_id>/cancel/",
                wrap(require_POST(self.cancel_view)),
                name="orchestrator_task_cancel",
            ),
            *urls,
        ]

    # Task rows are records: operators act on them through the buttons above (Retry, Cancel,
    # Hang up), which go through the orchestrator's services and leave a task event and an
    # audit entry. The stored fields are shown, never edited; retention deletes old tasks.
    def has_change_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        return False

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST":
            return _refused(
                "A task's stored fields cannot be edited in the admin"
                + (" (this task is finished: its record is read-only)" if _finished(object_id) else "")
                + ". Use Retry (a new task), Cancel or Hang up: they go through the orchestrator and are recorded."
            )
        return super().changeform_view(request, object_id, form_url, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        return _refused(
            "Tasks cannot be deleted in the admin: their history is the audit trail. "
            "Retention deletes old tasks (manage.py apply_retention)."
        )

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        if not request.user.has_perm(access.OPERATE_TASKS):
            raise access.refuse(request, access.OPERATE_TASKS)
        try:
            new = console_services.task_retry_by_operator(task_id=object_id, user=request.user)
        except NotRetryable as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(reverse("admin:orchestrator_task_change", args=[object_id]))
        except Exception as exc:  # e.g. the task type is no longer registered
            messages.error(request, f"Not retried: {exc}")
            return HttpResponseRedirect(reverse("admin:orchestrator_task_change", args=[object_id]))
        messages.success(request, f"Retried as a new task {new.id} (this one stays as it was).")
        return HttpResponseRedirect(reverse("admin:orchestrator_task_change", args=[new.id]))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        if not request.user.has_perm(access.OPERATE_TASKS):
            raise access.refuse(request, access.OPERATE_TASKS)
        try:
            result = console_services.task_cancel_by_operator(task_id=object_id, user=request.user)
            if result.applied:
                messages.success(request, "Task cancelled.")
            else:
                messages.warning(request, "The task had already finished; nothing changed.")
        except IllegalTransition as exc:
            messages.error(request, f"Cannot cancel: {exc}")
        return HttpResponseRedirect(reverse("admin:orchestrator_task_change", args=[object_id]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        task = get_object_or_404(Task.objects.select_related("contact", "parent"), pk=object_id)
        extra = {**(extra_context or {}), **task_page_context(task)}
        if not request.user.has_perm(access.OPERATE_TASKS):
            extra["cc_can_retry"] = extra["cc_can_cancel"] = False
        return super().change_view(request, object_id, form_url, extra_context=extra)


def _finished(object_id: Any) -> bool:
    return Task.objects.filter(pk=object_id, status__in=FINAL).exists()


def _refused(message: str) -> HttpResponse:
    return HttpResponse(message, status=403, content_type="text/plain; charset=utf-8")


def task_page_context(task: Task) -> dict[str, Any]:
    events = list(task.events.order_by("created_at", "id"))
    for event in events:  # readable "name: value" pairs, not a Python dict
        event.detail_items = presentation.detail_items(event.details)
    provider_ids = [("task", task.provider_id)] if task.provider_id else []
    for model, field in ((Message, "provider_sid"), (Call, "provider_sid"), (Email, "provider_message_id")):
        for value in (
            model.objects.filter(task=task)
            .exclude(**{f"{field}__isnull": True})
            .values_list(field, flat=True)
        ):
            if value:
                provider_ids.append((model._meta.verbose_name, value))
    chain = (task.result or {}).get("chain", {}).get("attempts", []) if isinstance(task.result, dict) else []
    children = list(
        task.children.order_by("created_at").only("id", "type", "channel", "status", "error_message")
    )
    arts = []
    for artifact in Artifact.objects.filter(task=task).order_by("occurred_at"):
        kind = artifacts.preview_kind(artifact) if artifacts.artifact_available(artifact) else "missing"
        text = ""
        if kind in ("text", "html"):
            try:
                text = artifacts.artifact_text(artifact)
            except OSError:
                kind = "missing"
        if kind == "missing":
            text = artifacts.unavailable_reason(artifact)
        url = "" if kind == "missing" else artifacts.artifact_url(artifact)
        arts.append({"artifact": artifact, "kind": kind, "url": url, "text": text})
    return {
        "cc_task": task,
        "cc_events": events,
        "cc_provider_ids": provider_ids,
        "cc_chain": chain,
        "cc_children": children,
        "cc_artifacts": arts,
        "cc_can_retry": task.status in ("failed", "expired", "cancelled"),
        "cc_can_cancel": task.status not in FINAL,
        "cc_status": presentation.status_badge(task.status),
        "cc_channel": presentation.channel_icon(task.channel, label=True),
        "cc_contact": presentation.contact_chip(task.contact),
        "cc_is_call": task.type == "call.outbound",
    }


class ConsoleContactAdmin(ContactAdmin):
    list_display = ["avatar_col", "name", "phone", "email", "whatsapp", "locale", "timezone", "created_at"]
    list_display_links = ["name"]
    change_form_template = "dashboard/contact_change_form.html"

    @admin.display(description="")
    def avatar_col(self, obj: Contact) -> str:
        return presentation.avatar(obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        contact = get_object_or_404(Contact, pk=object_id)
        timeline = selectors.contact_timeline(contact_id=contact.pk)
        extra = {
            **(extra_context or {}),
            "cc_contact": contact,
            "cc_avatar": presentation.avatar(contact, size=64),
            "cc_consents": selectors.contact_consents(contact_id=contact.pk),
            "cc_timeline": [
                {"entry": e, "icon": presentation.channel_icon(e.channel or "content"), "url": url}
                for e, url in zip(timeline, timeline_links(timeline), strict=True)
            ],
        }
        return super().change_view(request, object_id, form_url, extra_context=extra)


def timeline_links(entries: list[selectors.TimelineEntry]) -> list[str]:
    """Where each dossier row leads: a call to its call view, an inbound message to its
    conversation, a message or email to its task, an artifact to its signed link (one query)."""
    task_ids = [e.obj.task_id for e in entries if e.kind == "message" and e.obj.task_id]
    conversations = dict(
        ConversationTask.objects.filter(task_id__in=task_ids).values_list("task_id", "conversation_id")
    )
    links = []
    for e in entries:
        task_id = getattr(e.obj, "task_id", None)
        if e.kind == "artifact":
            links.append(artifacts.artifact_url(e.obj))
        elif e.kind == "call" and task_id:
            links.append(reverse("dashboard:call", args=[task_id]))
        elif e.kind == "message" and task_id in conversations:
            links.append(reverse("dashboard:conversation", args=[conversations[task_id]]))
        elif task_id:
            links.append(reverse("admin:orchestrator_task_change", args=[task_id]))
        else:
            links.append("")
    return links


# "View site" leads to the console's conversations inbox (this project has no public site).
admin.site.site_url = "/admin/conversations/"

admin.site.unregister(Task)
admin.site.register(Task, ConsoleTaskAdmin)
admin.site.unregister(Contact)
admin.site.register(Contact, ConsoleContactAdmin)


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin):
    list_display = ["title", "channel", "body"]
    list_filter = ["channel"]
    search_fields = ["title", "body"]
