"""The console's custom admin pages: inbound queue, live calls, operations. Thin: they call
selectors and services and render; every one is wrapped in ``admin.site.admin_view``."""

from __future__ import annotations

import os
import re
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from comms_platform import config
from dashboard import adapters, calls, connectivity, live_auth, presentation, selectors, services
from dashboard.artifacts import artifact_available, artifact_url, unavailable_reason
from dashboard.models import CannedResponse, InboxItem
from dossiers.models import ConsentStatus, Message
from dossiers.services import consent_status
from orchestrator.models import AgentRegistration, Task
from orchestrator.services import UnknownTaskType
from orchestrator.states import IllegalTransition


def _ctx(request: HttpRequest, title: str, **extra) -> dict:
    return {**admin.site.each_context(request), "title": title, **extra}


# --- Live sockets -----------------------------------------------------------------------

# The console's sockets (comms_platform/routing.py) a page may ask a ticket for.
LIVE_PATHS = re.compile(
    r"^/ws/(inbox|calls|health|(tasks|calls)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/$"
)


@never_cache
def live_ticket(request: HttpRequest) -> JsonResponse:
    """``GET /admin/live/ticket/?path=/ws/inbox/``: the URL of that socket on the realtime
    service, with a single-use ticket for this user and this page's origin (dashboard.live_auth)."""
    path = request.GET.get("path", "")
    if not LIVE_PATHS.match(path):
        return JsonResponse(
            {"detail": f"path must be one of the console's sockets, not {path[:80]!r}"}, status=400
        )
    if not live_auth.user_may_watch(request.user):
        request.refused_permission = live_auth.PERMISSION  # for the audit row (AuditRefusals)
        return JsonResponse({"detail": "your account may not use the live console"}, status=403)
    origin = f"{request.scheme}://{request.get_host()}"
    ticket = live_auth.ticket_mint(user=request.user, path=path, origin=origin)
    ws_base = settings.PUBLIC_WS_BASE_URL or origin.replace("http", "ws", 1)
    return JsonResponse({"url": f"{ws_base}{path}?{urlencode({'ticket': ticket})}",
                         "expires_in": settings.CONSOLE_WS_TICKET_TTL_SECONDS})  # fmt: skip


# --- Inbound queue ----------------------------------------------------------------------


def inbox(request: HttpRequest) -> HttpResponse:
    services.inbox_sync()
    services.inbox_flag_unclaimed()
    rows = selectors.inbox_rows()
    for row in rows:
        row.icon = presentation.channel_icon(row.channel)
        row.chip = presentation.contact_chip(row.contact)
        row.wait = presentation.age(row.item.received_at)
    template = "dashboard/inbox_list.html" if request.GET.get("partial") else "dashboard/inbox.html"
    flag_seconds = settings.INBOX_UNCLAIMED_FLAG_SECONDS
    counts = {
        "open": len(rows),
        "unclaimed": sum(1 for r in rows if r.item.claimed_by_id is None),
        "mine": sum(1 for r in rows if r.item.claimed_by_id == request.user.pk),
    }
    return render(
        request, template, _ctx(request, "Inbound queue", rows=rows, counts=counts, flag_seconds=flag_seconds)
    )


def inbox_item(request: HttpRequest, pk: int) -> HttpResponse:
    item = get_object_or_404(InboxItem.objects.select_related("task__contact", "claimed_by"), pk=pk)
    if request.method == "POST":
        return _inbox_action(request, item)
    task = item.task
    if request.GET.get("partial") == "thread":  # the page's live refresh
        return render(request, "dashboard/inbox_thread.html", {"thread": selectors.inbox_thread(task=task)})
    channel = services.INBOUND_TYPES[task.type]
    contact = task.contact
    opted_out = (
        bool(contact) and consent_status(contact_id=contact.pk, channel=channel) == ConsentStatus.OPTED_OUT
    )
    window_closed = channel == "whatsapp" and not services.whatsapp_window_open(contact=contact)
    message = Message.objects.filter(task=task, direction="inbound").first()
    context = _ctx(
        request,
        f"Conversation with {contact or 'unknown sender'}",
        item=item,
        task=task,
        channel=channel,
        contact=contact,
        icon=presentation.channel_icon(channel, label=True),
        avatar=presentation.avatar(contact, size=48),
        thread=selectors.inbox_thread(task=task),
        mine=item.claimed_by_id == request.user.pk,
        opted_out=opted_out,
        window_closed=window_closed,
        templates=adapters.whatsapp_templates() if window_closed else [],
        canned=CannedResponse.objects.filter(Q(channel="") | Q(channel=channel)),
        reply_to=adapters.reply_address(channel=channel, contact=contact, message=message),
    )
    return render(request, "dashboard/inbox_item.html", context)


def _inbox_action(request: HttpRequest, item: InboxItem) -> HttpResponseRedirect:
    action = request.POST.get("action")
    here = reverse("dashboard:inbox-item", args=[item.pk])
    if action == "claim":
        if services.inbox_claim(item_id=item.pk, user=request.user):
            messages.success(request, "You have this conversation.")
        else:
            holder = (
                InboxItem.objects.filter(pk=item.pk).values_list("claimed_by__username", flat=True).first()
            )
            messages.error(
                request, f"Already claimed by {holder or 'someone else'} — pick another conversation."
            )
    elif action == "release":
        services.inbox_release(item_id=item.pk, user=request.user)
        messages.info(request, "Released back to the queue.")
        return HttpResponseRedirect(reverse("dashboard:inbox"))
    elif action == "resolve":
        if services.inbox_resolve(item_id=item.pk, user=request.user):
            messages.success(request, "Resolved.")
            return HttpResponseRedirect(reverse("dashboard:inbox"))
        messages.error(request, "Someone else holds this conversation.")
    elif action == "reply":
        template = request.POST.get("template", "")
        variables = {
            key.removeprefix("var_"): value for key, value in request.POST.items() if key.startswith("var_")
        }
        try:
            services.inbox_reply(item_id=item.pk, user=request.user, body=request.POST.get("body", ""),
                                 template=template, variables=variables)  # fmt: skip
            messages.success(request, "Reply queued.")
        except services.ReplyRefused as exc:
            messages.error(request, str(exc))
        except UnknownTaskType as exc:
            messages.error(request, f"Cannot send: no agent is registered for {exc}.")
    return HttpResponseRedirect(here)


# --- Live calls -------------------------------------------------------------------------


def calls_list(request: HttpRequest) -> HttpResponse:
    active = selectors.active_calls()
    recent = selectors.recent_calls()
    for task in [*active, *recent]:
        task.chip = presentation.contact_chip(task.contact)
        task.badge = presentation.status_badge(task.status)
        task.age_text = presentation.age(task.created_at)
    template = "dashboard/calls_list.html" if request.GET.get("partial") else "dashboard/calls.html"
    return render(request, template, _ctx(request, "Live calls", active=active, recent=recent))


def call_detail(request: HttpRequest, task_id: str) -> HttpResponse:
    task = get_object_or_404(Task.objects.select_related("contact"), pk=task_id, type="call.outbound")
    if request.method == "POST":
        try:
            done = calls.call_hang_up(task_id=str(task.id), actor=f"operator:{request.user.get_username()}")
        except (calls.HangUpFailed, IllegalTransition) as exc:
            messages.error(request, f"Cannot hang up: {exc}")
        else:
            messages.success(request, {
                "asked": "Hang-up sent to the voice provider: the call ends in a moment.",
                "not_placed": "The call had not been placed yet: cancelled.",
                "finished": "This call had already ended.",
            }[done.outcome])  # fmt: skip
        return HttpResponseRedirect(reverse("dashboard:call", args=[task.id]))
    call, turns, recording = selectors.call_for_task(task=task)
    live = task.status in selectors.ACTIVE_CALL_STATUSES
    if request.GET.get("format") == "json":  # the live view catching up after (re)connecting
        return JsonResponse(_call_state(task, call, turns, after=request.GET.get("after", "-1"), live=live))
    context = _ctx(
        request,
        f"Call with {task.contact or task.payload.get('to', 'unknown')}",
        task=task,
        call=call,
        turns=turns,
        recording=recording,
        recording_url=artifact_url(recording) if recording and artifact_available(recording) else "",
        recording_unavailable=unavailable_reason(recording)
        if recording and not artifact_available(recording)
        else "",
        live=live,
        badge=presentation.status_badge(task.status),
        chip=presentation.contact_chip(task.contact),
    )
    return render(request, "dashboard/call.html", context)


def _call_state(task: Task, call, turns: list, *, after: str, live: bool) -> dict:
    try:
        after_seq = int(after)
    except ValueError:
        after_seq = -1
    return {
        "status": task.status,
        "live": live,
        "turns": [
            {"sequence": t.sequence, "speaker": t.speaker, "text": t.text, "interrupted": t.interrupted}
            for t in turns
            if t.sequence > after_seq
        ],
    }


# --- Operations -------------------------------------------------------------------------


def operations(request: HttpRequest) -> HttpResponse:
    results = connectivity.run_checks() if request.method == "POST" else None
    mode = settings.COMMS_MODE
    variables = config.report(os.environ, mode)
    groups: dict[str, list] = {}
    titles = config.groups()
    for var in variables:
        groups.setdefault(titles.get(var.group, var.group), []).append(var)
    context = _ctx(request, "Configuration and connectivity", mode=mode, groups=groups, results=results)
    return render(request, "dashboard/operations.html", context)


def health(request: HttpRequest) -> HttpResponse:
    queues = set(AgentRegistration.objects.values_list("queue", flat=True))
    rows = selectors.agent_health(queue_depths=connectivity.queue_depths(queues))
    recent = Task.objects.filter(created_at__gte=timezone.now() - timezone.timedelta(hours=1))
    totals = recent.exclude(contact__synthetic=True).aggregate(  # smoke runs are not traffic
        created=Count("id"), failed=Count("id", filter=Q(status="failed"))
    )
    context = _ctx(request, "Agent health", rows=rows, totals=totals, redis=bool(settings.REDIS_URL))
    template = "dashboard/health_table.html" if request.GET.get("partial") else "dashboard/health.html"
    return render(request, template, context)
