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
from dashboard import access, calls, connectivity, live_auth, presentation, selectors
from dashboard.artifacts import artifact_available, artifact_url, unavailable_reason
from orchestrator.models import AgentRegistration, Task
from orchestrator.states import IllegalTransition


def _ctx(request: HttpRequest, title: str, **extra) -> dict:
    return {**admin.site.each_context(request), "title": title, **extra}


# --- Live sockets -----------------------------------------------------------------------

# The console's sockets (comms_platform/routing.py) a page may ask a ticket for.
LIVE_PATHS = re.compile(
    r"^/ws/(inbox|calls|health|(tasks|calls|broadcasts)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/$"
)

# Sockets that need more than the console permission (their consumer checks it again).
SOCKET_PERMISSIONS = {"broadcasts": access.VIEW_BROADCASTS}


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
    extra = SOCKET_PERMISSIONS.get(path.split("/")[2], "")
    if extra and not request.user.has_perm(extra):  # the consumer refuses it too; say so here first
        request.refused_permission = extra
        return JsonResponse({"detail": f"this socket needs the permission {extra}"}, status=403)
    origin = f"{request.scheme}://{request.get_host()}"
    ticket = live_auth.ticket_mint(user=request.user, path=path, origin=origin)
    ws_base = settings.PUBLIC_WS_BASE_URL or origin.replace("http", "ws", 1)
    return JsonResponse({"url": f"{ws_base}{path}?{urlencode({'ticket': ticket})}",
                         "expires_in": settings.CONSOLE_WS_TICKET_TTL_SECONDS})  # fmt: skip


# --- The old inbound queue ------------------------------------------------------------


def inbox_moved(request: HttpRequest, pk: int | None = None) -> HttpResponseRedirect:
    """``/admin/inbox/`` and ``/admin/inbox/<n>/`` were the per-message queue, retired for
    conversations (one per contact and channel): old links and bookmarks land in their inbox."""
    return HttpResponseRedirect(reverse("dashboard:conversations"))


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
