"""The console's pages, mounted under /admin/ (before the admin's own URLs)."""

from django.contrib import admin
from django.urls import path
from django.views.decorators.http import require_http_methods

from dashboard import broadcast_views, conversation_views, views
from dashboard.access import (
    CONTROL_BROADCASTS,
    CREATE_BROADCASTS,
    OPERATE_TASKS,
    SUPERVISE,
    USE_CONSOLE,
    VIEW_BROADCASTS,
    VIEW_OPERATIONS,
    VIEW_RECIPIENTS,
    WORK_INBOX,
    require,
)

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
    # Broadcasts (issue 19). The admin's own /admin/broadcasts/broadcast/ lists stay reachable.
    path("broadcasts/", staff(require(VIEW_BROADCASTS)(broadcast_views.broadcasts_list)), name="broadcasts"),
    path(
        "broadcasts/new/",
        staff(get_post(require(CREATE_BROADCASTS)(broadcast_views.broadcast_new))),
        name="broadcast-new",
    ),
    path(
        "broadcasts/<uuid:pk>/",
        staff(get_post(require(VIEW_BROADCASTS, CONTROL_BROADCASTS)(broadcast_views.broadcast_detail))),
        name="broadcast",
    ),
    path(
        "broadcasts/<uuid:pk>/recipients.csv",
        staff(require(VIEW_RECIPIENTS)(broadcast_views.broadcast_recipients_csv)),
        name="broadcast-recipients",
    ),
]
