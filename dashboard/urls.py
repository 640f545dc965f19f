"""The console's pages, mounted under /admin/ (before the admin's own URLs)."""

from django.contrib import admin
from django.urls import path
from django.views.decorators.http import require_http_methods

from dashboard import conversation_views, views
from dashboard.access import OPERATE_TASKS, SUPERVISE, USE_CONSOLE, VIEW_OPERATIONS, WORK_INBOX, require

app_name = "dashboard"
staff = admin.site.admin_view
get_post = require_http_methods(["GET", "POST"])

# Staff opens the admin; each page and action also needs its permission (dashboard/access.py).
console = require(USE_CONSOLE)

urlpatterns = [
    # The ticket view answers JSON (the page's script reads it) and checks use_console itself.
    path("live/ticket/", staff(views.live_ticket), name="live-ticket"),
    # The retired per-message queue: its old links lead to the conversations inbox.
    path("inbox/", staff(console(views.inbox_moved)), name="inbox"),
    path("inbox/<int:pk>/", staff(console(views.inbox_moved)), name="inbox-item"),
    path(
        "conversations/",
        staff(get_post(console(conversation_views.conversations_inbox))),
        name="conversations",
    ),
    path(
        "conversations/<int:pk>/",
        staff(get_post(require(USE_CONSOLE, WORK_INBOX)(conversation_views.conversation_detail))),
        name="conversation",
    ),
    path("supervisor/", staff(require(SUPERVISE)(conversation_views.supervisor)), name="supervisor"),
    path("calls/", staff(console(views.calls_list)), name="calls"),
    path(
        "calls/<uuid:task_id>/",
        staff(get_post(require(USE_CONSOLE, OPERATE_TASKS)(views.call_detail))),
        name="call",
    ),
    path("operations/", staff(get_post(require(VIEW_OPERATIONS)(views.operations))), name="operations"),
    path("health/", staff(console(views.health)), name="health"),
]
