"""The console's pages, mounted under /admin/ (before the admin's own URLs)."""

from django.contrib import admin
from django.urls import path
from django.views.decorators.http import require_http_methods

from dashboard import views

app_name = "dashboard"
staff = admin.site.admin_view
get_post = require_http_methods(["GET", "POST"])

urlpatterns = [
    path("live/ticket/", staff(views.live_ticket), name="live-ticket"),
    path("inbox/", staff(views.inbox), name="inbox"),
    path("inbox/<int:pk>/", staff(get_post(views.inbox_item)), name="inbox-item"),
    path("calls/", staff(views.calls_list), name="calls"),
    path("calls/<uuid:task_id>/", staff(get_post(views.call_detail)), name="call"),
    path("operations/", staff(get_post(views.operations)), name="operations"),
    path("health/", staff(views.health), name="health"),
]
