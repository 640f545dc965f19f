"""The conversations inbox, a conversation, the supervisor view (issue 17). Thin: they call
conversations' selectors and services and render; every one is wrapped in
``admin.site.admin_view`` and checks its permission (dashboard/access.py)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import OuterRef, Q, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone

from conversations import handoff
from conversations import selectors as conv_selectors
from conversations import services as conv_services
from conversations.models import ACTIVE, Conversation, Label, Operator
from dashboard import access, presentation, selectors
from dashboard.models import CannedResponse
from dossiers.models import Consent, ConsentStatus, Message, TranscriptTurn
from dossiers.services import consent_status
from orchestrator import registry
from orchestrator.errors import PermanentError, TransientError
from orchestrator.models import Task
from orchestrator.services import UnknownTaskType
from orchestrator.states import FINAL

FOLDERS = ("mine", "unassigned", "all")


def _ctx(request: HttpRequest, title: str, **extra) -> dict:
    return {**admin.site.each_context(request), "title": title, **extra}


def conversations_inbox(request: HttpRequest) -> HttpResponse:
    """``/admin/conversations/?folder=mine|unassigned|all&channel=sms&label=vip``."""
    if request.method == "POST":  # available / away
        if not request.user.has_perm(access.WORK_INBOX):
            raise access.refuse(request, access.WORK_INBOX)
        conv_services.operator_set_availability(
            user=request.user, available=request.POST.get("available") == "1"
        )
        return HttpResponseRedirect(request.get_full_path())
    folder = request.GET.get("folder", "unassigned")
    folder = folder if folder in FOLDERS else "unassigned"
    qs = Conversation.objects.filter(status__in=ACTIVE).select_related("contact", "assignee")
    if folder == "mine":
        qs = qs.filter(assignee=request.user)
    elif folder == "unassigned":
        qs = qs.filter(assignee__isnull=True)
    channel, label = request.GET.get("channel", ""), request.GET.get("label", "")
    if channel:
        qs = qs.filter(channel=channel)
    if label:
        qs = qs.filter(labels__name=label)
    last_words = (  # the customer's latest message on the thread: the row's preview (a subquery)
        Message.objects.filter(
            contact_id=OuterRef("contact_id"), channel=OuterRef("channel"), direction="inbound"
        )
        .order_by("-occurred_at")
        .values("body")[:1]
    )
    rows = list(
        qs.annotate(preview=Subquery(last_words))
        .prefetch_related("labels")
        .order_by("-sla_breached", "waiting_since", "created_at")[:200]
    )
    opted_out = set(  # one query: the list marks conversations whose contact opted out on the channel
        Consent.objects.filter(
            contact_id__in={c.contact_id for c in rows}, status=ConsentStatus.OPTED_OUT
        ).values_list("contact_id", "channel")
    )
    for conv in rows:
        conv.opted_out = (conv.contact_id, conv.channel) in opted_out
        conv.icon = presentation.channel_icon(conv.channel)
        conv.chip = presentation.contact_chip(conv.contact)
        conv.wait = presentation.age(conv.waiting_since) if conv.waiting_since else ""
    operator = Operator.objects.filter(user=request.user).first()
    context = _ctx(request, "Conversations", rows=rows, folder=folder, channel=channel, label=label,
                   counts=conv_selectors.inbox_counts(user=request.user), labels=Label.objects.all(),
                   available=bool(operator and operator.available), folders=FOLDERS)  # fmt: skip
    template = (
        "dashboard/conversations_list.html" if request.GET.get("partial") else "dashboard/conversations.html"
    )
    return render(request, template, context)


def conversation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    conv = get_object_or_404(Conversation.objects.select_related("contact", "assignee"), pk=pk)
    if request.method == "POST":
        return _action(request, conv)
    contact = conv.contact
    timeline = [
        e for e in selectors.contact_timeline(contact_id=contact.pk, limit=100) if e.kind != "artifact"
    ]
    timeline = _with_pending_replies(conv, timeline)
    if request.GET.get("partial") == "thread":
        return render(
            request, "dashboard/conversation_thread.html", {"thread": list(reversed(timeline)), "conv": conv}
        )
    if request.GET.get("partial") == "actions":  # a colleague took, assigned or resolved it
        return render(request, "dashboard/conversation_actions.html", _actions_context(request, conv))
    conv_services.conversation_mark_read(conversation_id=conv.pk, user=request.user)
    window_closed = conv.channel == "whatsapp" and not conv_services.whatsapp_window_open(contact)
    opted_out = consent_status(contact_id=contact.pk, channel=conv.channel) == ConsentStatus.OPTED_OUT
    canned = [
        {
            "title": c.title,
            "body": conv_services.render_variables(c.body, contact=contact, operator=request.user),
        }
        for c in CannedResponse.objects.filter(Q(channel="") | Q(channel=conv.channel))
    ]
    context = _ctx(
        request, f"Conversation with {contact}",
        icon=presentation.channel_icon(conv.channel, label=True), avatar=presentation.avatar(contact, size=48),
        thread=list(reversed(timeline)), recent=timeline[:5], notes=conv.notes.select_related("author"),
        consents=selectors.contact_consents(contact_id=contact.pk),
        open_tasks=Task.objects.filter(contact=contact).exclude(status__in=FINAL).order_by("-created_at")[:10],
        opted_out=opted_out, canned=canned, **_actions_context(request, conv),
        labels=Label.objects.all(), conv_labels={lb.name for lb in conv.labels.all()},
        events=conv.events.order_by("-created_at")[:20], **_handoff_context(conv),
        window_closed=window_closed, templates=registry.templates_for("whatsapp") if window_closed else [],
    )  # fmt: skip
    return render(request, "dashboard/conversation.html", context)


def _actions_context(request: HttpRequest, conv: Conversation) -> dict:
    people = (  # who may be given conversations: the work_inbox role, and superusers
        get_user_model()
        .objects.filter(Q(groups__permissions__codename="work_inbox") | Q(is_superuser=True), is_active=True)
        .distinct()
        .order_by("username")
    )
    return {"conv": conv, "contact": conv.contact, "mine": conv.assignee_id == request.user.pk, "people": people,
            "can_supervise": request.user.has_perm(access.SUPERVISE),
            "handoff_waiting": handoff.handoff_waiting(conv) is not None}  # fmt: skip


def _with_pending_replies(conv: Conversation, timeline: list) -> list:
    """Replies sent from this conversation whose message the agent has not stored yet (still
    queued): shown in the thread as pending, so the operator sees what they sent at once."""
    stored = {e.obj.task_id for e in timeline if e.kind == "message" and e.obj.task_id}
    pending = [
        selectors.TimelineEntry(
            "message",
            t.created_at,
            conv.channel,
            "outbound",
            t.payload.get("body") or f"template {t.payload.get('template', '')}",
            f"{t.status} (pending)",
            t,
        )
        for t in Task.objects.filter(
            correlation_id=f"conversation-{conv.pk}", type=f"{conv.channel}.send"
        ).order_by("-created_at")[:20]
        if t.id not in stored
    ]
    return sorted([*timeline, *pending], key=lambda e: e.at, reverse=True)


def _handoff_context(conv: Conversation) -> dict:
    """A voice hand-off: the AI's reason and summary and the call's transcript, shown first."""
    if conv.channel != "voice":
        return {}
    handoff = conv.events.filter(kind="handoff").order_by("-created_at").first()
    if handoff is None:
        return {}
    call_task = handoff.details.get("call_task") or None
    turns = (
        TranscriptTurn.objects.filter(call__task_id=call_task).order_by("call_id", "sequence")[:200]
        if call_task
        else []
    )
    return {"handoff": handoff.details, "handoff_at": handoff.created_at, "handoff_turns": list(turns)}


def _action(request: HttpRequest, conv: Conversation) -> HttpResponseRedirect:
    action = request.POST.get("action", "")
    here = reverse("dashboard:conversation", args=[conv.pk])
    user = request.user
    try:
        if action == "claim":
            if conv_services.conversation_claim(conversation_id=conv.pk, user=user):
                messages.success(request, "You have this conversation.")
            else:
                holder = (
                    Conversation.objects.filter(pk=conv.pk)
                    .values_list("assignee__username", flat=True)
                    .first()
                )
                messages.error(request, f"Already taken by {holder or 'someone else'}.")
        elif action == "assign":  # to someone else: a supervisor's action; the holder may transfer theirs
            to_id = request.POST.get("to", "")
            to = get_user_model().objects.filter(pk=to_id).first() if to_id.isdigit() else None
            if conv.assignee_id != user.pk and not user.has_perm(access.SUPERVISE):
                raise access.refuse(request, access.SUPERVISE)
            if to is None:
                messages.error(request, "Pick an operator.")
            else:
                conv_services.conversation_assign(conversation_id=conv.pk, to=to, by=user)
                messages.success(request, f"Assigned to {to.get_username()}.")
        elif action == "release":  # the holder gives it back to the unassigned folder
            if conv.assignee_id != user.pk:
                messages.error(request, "Only the operator holding it can release it.")
            else:
                conv_services.conversation_assign(conversation_id=conv.pk, to=None, by=user)
                messages.success(request, "Released: back in Unassigned.")
                return HttpResponseRedirect(reverse("dashboard:conversations") + "?folder=unassigned")
        elif action == "take_call":  # the caller waiting in the hand-off queue is put through
            handoff.handoff_take_call(conversation_id=conv.pk, user=user)
            messages.success(request, "Putting the caller through to you.")
        elif action == "reply":
            variables = {k[4:]: v for k, v in request.POST.items() if k.startswith("var_")}
            conv_services.conversation_reply(conversation_id=conv.pk, user=user, body=request.POST.get("body", ""),
                                             template=request.POST.get("template", ""), variables=variables)  # fmt: skip
            messages.success(request, "Reply queued.")
        elif action == "note":
            conv_services.conversation_note(
                conversation_id=conv.pk, user=user, body=request.POST.get("body", "")
            )
            messages.success(request, "Note saved (operators only).")
        elif action in ("label", "unlabel"):
            conv_services.conversation_label(conversation_id=conv.pk, user=user, name=request.POST.get("label", ""),
                                             add=action == "label")  # fmt: skip
        elif action == "snooze":
            hours = request.POST.get("hours", "4")
            hours = int(hours) if hours.isdigit() and 0 < int(hours) <= 24 * 14 else 4
            conv_services.conversation_snooze(conversation_id=conv.pk, user=user,
                                              until=timezone.now() + timedelta(hours=hours))  # fmt: skip
            messages.success(request, f"Snoozed for {hours} h (a customer message wakes it sooner).")
        elif action == "resolve":
            finished = conv_services.conversation_resolve(conversation_id=conv.pk, user=user)
            messages.success(request, f"Resolved. {finished} inbound task(s) finished.")
            return HttpResponseRedirect(reverse("dashboard:conversations"))
        else:
            messages.error(request, f"Unknown action {action[:40]!r}.")
    except conv_services.ConversationRefused as exc:
        messages.error(request, str(exc))
    except (TransientError, PermanentError) as exc:  # the provider refused or was unreachable
        messages.error(request, f"The provider did not put the call through ({exc.code}); try again.")
    except UnknownTaskType as exc:
        messages.error(request, f"Cannot send: no agent is registered for {exc}.")
    return HttpResponseRedirect(here)


def supervisor(request: HttpRequest) -> HttpResponse:
    """Queue depth and oldest waiting per channel, SLA breaches, operators' load and median
    first response today; refreshed live."""
    figures = conv_selectors.supervisor_figures()
    for row in figures["channels"].values():
        row["oldest"] = presentation.age(timezone.now() - timedelta(seconds=row["oldest_seconds"]))
    template = "dashboard/supervisor_body.html" if request.GET.get("partial") else "dashboard/supervisor.html"
    return render(request, template, _ctx(request, "Supervisor", figures=figures))
