"""Broadcasts from the console (issue 19): the list, a new one (upload a CSV, preview, confirm)
and the watch page (live progress, pause / resume / cancel, the per-recipient CSV).

Thin: the CSV is read by ``broadcasts.csvimport``, the broadcast created, previewed and
controlled by ``broadcasts.services``, its progress read by ``broadcasts.selectors``.

Nothing is created before the operator confirms. Between the preview and the confirmation the
previewed recipients are kept in the operator's session (the database-backed session every web
instance reads), compressed, under a random draft token that the confirm form carries back: a confirm
for another draft, or for none, creates nothing. The token is also the broadcast's
idempotency key, so a double-clicked Confirm creates one broadcast.

The confirm does not insert the recipients itself (100,000 rows took ~19 s in the request): it
stores the broadcast as ``importing`` with the previewed rows as one compressed row, answers with
the watch page at once, and the Celery task ``broadcasts.import_recipients`` inserts them in one
transaction and starts the broadcast. With a prompt, the body the content agent wrote for the
preview is the one sent (no second model call).
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import secrets
import zlib
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import DatabaseError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from broadcasts import rendering
from broadcasts import selectors as bc_selectors
from broadcasts import services as bc_services
from broadcasts.csvimport import MAX_BYTES, CsvRefused, ParsedCsv, parse_recipients_csv
from broadcasts.errors import BroadcastError
from broadcasts.models import FINAL_RECIPIENT, Broadcast, BroadcastStatus, BroadcastUpload
from dashboard import access, presentation

log = logging.getLogger(__name__)
DRAFT_KEY = "broadcast_draft"
PREVIEW_COUNT = 5
CONSOLE_CHANNELS = [(c.value, c.label) for c in bc_services.SENDING_CHANNELS]  # what the engine sends
ACTIONS = {"pause": bc_services.broadcast_pause, "resume": bc_services.broadcast_resume,
           "cancel": bc_services.broadcast_cancel}  # fmt: skip
STATUS_TONES = {"importing": "busy", "writing": "busy", "draft": "idle", "scheduled": "idle", "running": "busy",
                "paused": "warn", "cancelled": "warn", "completed": "good", "failed": "bad"}  # fmt: skip
EMAILED = ("email", "notify")  # channels whose form takes a subject and an HTML part


def _ctx(request: HttpRequest, title: str, **extra) -> dict:
    return {**admin.site.each_context(request), "title": title, **extra}


class BroadcastForm(forms.Form):
    name = forms.CharField(max_length=200)
    channel = forms.ChoiceField(choices=CONSOLE_CHANNELS)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False,
                           help_text="Text with {{ variables }}: the CSV's column names.")  # fmt: skip
    template = forms.CharField(max_length=100, required=False,
                               help_text="Or a template's name (a message template; by email, templates/email/<name>.html).")  # fmt: skip
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False,
                             help_text="Or a prompt: the content agent writes the body once, shown in the preview.")  # fmt: skip
    subject = forms.CharField(max_length=300, required=False,
                              help_text="Email (required) and notify: the subject, with {{ variables }}.")  # fmt: skip
    html = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                           help_text="Email and notify, optional: an HTML part with {{ variables }} (values escaped).")  # fmt: skip
    scheduled_for = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Empty: start at once. Your time zone is the server's (UTC).",
    )  # fmt: skip
    rate_per_second = forms.FloatField(required=False, min_value=0.01, max_value=1000,
                                       help_text="Messages per second per sender. Empty: the platform's limit.")  # fmt: skip

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        given = [name for name in ("body", "template", "prompt") if data.get(name, "").strip()]
        if len(given) != 1:
            raise forms.ValidationError("Give a body, a template or a prompt (one of them).")
        channel = data.get("channel")
        if channel == "email" and not data.get("subject", "").strip():
            self.add_error("subject", "An email broadcast needs a subject.")
        if channel not in EMAILED and (data.get("subject") or data.get("html")):
            self.add_error("subject", f"Subject and HTML are for email and notify broadcasts, not {channel}.")
        return data


class UploadForm(BroadcastForm):
    file = forms.FileField(
        help_text="CSV, UTF-8: a header row, a phone (email; contact_id for notify) column, one row per recipient."
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_BYTES:
            raise forms.ValidationError(f"The file is {upload.size:,} bytes; the limit is {MAX_BYTES:,}.")
        return upload


# --- the list -------------------------------------------------------------------------------


def broadcasts_list(request: HttpRequest) -> HttpResponse:
    rows = list(Broadcast.objects.order_by("-created_at")[:100])
    done = dict(  # one query: finished recipients per broadcast on the page
        Broadcast.objects.filter(pk__in=[b.pk for b in rows])
        .annotate(done=Count("recipients", filter=Q(recipients__status__in=FINAL_RECIPIENT)))
        .values_list("pk", "done")
    )
    for b in rows:
        b.done = done.get(b.pk, 0)
        b.percent = int(100 * b.done / b.total) if b.total else (100 if b.status == "completed" else 0)
        b.badge = badge(b.status)
        b.icon = presentation.channel_icon(b.channel)
    can_create = request.user.has_perm(access.CREATE_BROADCASTS)
    return render(
        request, "dashboard/broadcasts.html", _ctx(request, "Broadcasts", rows=rows, can_create=can_create)
    )


def badge(status: str):
    return format_html('<span class="cc-badge cc-{}">{}</span>', STATUS_TONES.get(status, "idle"), status)


# --- new: upload, preview, confirm ----------------------------------------------------------


def broadcast_new(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST ``action=preview`` (with the file): the rendered messages and the
    bad rows; POST ``action=confirm`` (with the draft token): create it; ``action=discard``."""
    if request.method != "POST":
        return _form_page(request, UploadForm())
    action = request.POST.get("action", "preview")
    if action == "confirm":
        return _confirm(request)
    if action == "discard":
        request.session.pop(DRAFT_KEY, None)
        return HttpResponseRedirect(reverse("dashboard:broadcast-new"))
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _form_page(request, form, status=400)
    data = form.cleaned_data
    raw = data["file"].read()
    written = ""
    if data["prompt"]:
        try:  # written once here, shown in the preview, and sent as previewed
            written = bc_services.broadcast_write_text(prompt=data["prompt"], channel=data["channel"])
        except BroadcastError as exc:
            form.add_error("prompt", str(exc))
            return _form_page(request, form, status=400)
    try:
        parsed = parse_recipients_csv(raw, channel=data["channel"], required=_required(data, written))
    except CsvRefused as exc:
        form.add_error("file", str(exc))
        return _form_page(request, form, status=400)
    previews, preview_error = _preview(data, parsed, written)
    token = secrets.token_urlsafe(16)
    request.session[DRAFT_KEY] = {
        "token": token,
        "form": {k: _jsonable(v) for k, v in data.items() if k != "file"},
        "written": written,
        "recipients": _pack(parsed),
        "refused": parsed.rejected_total,
        "filename": data["file"].name[:120],
    }
    context = _ctx(request, "New broadcast: preview", form=data, parsed=parsed, previews=previews,
                   preview_error=preview_error, token=token, filename=data["file"].name, written=written,
                   can_confirm=bool(parsed.recipients) and not preview_error)  # fmt: skip
    return render(request, "dashboard/broadcast_preview.html", context)


def _required(data: dict[str, Any], written: str = "") -> set[str]:
    """The variables the body (or the written one), the subject and the HTML part use (a
    template's are checked when each message is rendered)."""
    return rendering.placeholders("\n".join((data["body"] or written, data["subject"], data["html"])))


def _form_page(request: HttpRequest, form: forms.Form, status: int = 200) -> HttpResponse:
    return render(
        request, "dashboard/broadcast_new.html", _ctx(request, "New broadcast", form=form), status=status
    )


def _preview(data: dict[str, Any], parsed: ParsedCsv, written: str = "") -> tuple[list[dict], str]:
    if not parsed.recipients:
        return [], ""
    try:
        rendered = bc_services.broadcast_preview(
            channel=data["channel"], body=data["body"] or written, template=data["template"],
            subject=data["subject"], html=data["html"], name=data["name"],
            recipients=parsed.recipients[:PREVIEW_COUNT], limit=PREVIEW_COUNT,
        )  # fmt: skip
    except BroadcastError as exc:
        return [], str(exc)
    return [{"to": p["to"], "ok": "body" in p, "text": p.get("body") or f"cannot be sent: {p.get('error')}",
             "subject": p.get("subject", ""), "html": p.get("html", "")}
            for p in rendered], ""  # fmt: skip


def _confirm(request: HttpRequest) -> HttpResponse:
    draft = request.session.get(DRAFT_KEY)
    token = request.POST.get("token", "")
    if not draft or not token or not secrets.compare_digest(draft["token"], token):
        messages.error(request, "This preview is no longer current (confirmed already, or replaced by "
                       "another upload): nothing was created. Upload the file again.")  # fmt: skip
        return _form_page(request, UploadForm(), status=409)
    form = BroadcastForm(draft["form"])
    if not form.is_valid():  # cannot happen for a draft this view stored; checked all the same
        return _form_page(request, UploadForm(draft["form"]), status=400)
    data = form.cleaned_data
    recipients = _unpack(draft["recipients"], channel=data["channel"])
    try:
        created = bc_services.broadcast_create(
            name=data["name"], channel=data["channel"], body=data["body"], template=data["template"],
            prompt=data["prompt"], written=draft.get("written", ""), subject=data["subject"], html=data["html"],
            recipients=recipients,
            scheduled_for=data["scheduled_for"], rate_per_second=data["rate_per_second"],
            idempotency_key=f"console-{token}", source=f"console:{request.user.get_username()}",
            created_by=request.user.get_username(), defer_intake=True,
        )  # fmt: skip
    except BroadcastError as exc:
        messages.error(request, f"The broadcast was not created: {exc}")
        return _form_page(request, UploadForm(draft["form"]), status=400)
    except DatabaseError:
        # broadcast_create writes in one transaction: nothing of it was saved. The draft stays,
        # so the operator can confirm again from the preview (same token, same idempotency key).
        log.exception("broadcast confirm failed")
        messages.error(request, "The broadcast was not created (the database refused the write); "
                       "nothing was saved. Go back to the preview and confirm again.")  # fmt: skip
        return _form_page(request, UploadForm(draft["form"]), status=503)
    request.session.pop(DRAFT_KEY, None)
    broadcast = created.broadcast
    messages.success(request, f"Broadcast “{broadcast.name}” created: importing {len(recipients)} recipients "
                     f"({draft['refused']} rows refused); it starts once they are in.")  # fmt: skip
    return HttpResponseRedirect(reverse("dashboard:broadcast", args=[broadcast.pk]))


def _pack(parsed: ParsedCsv) -> str:
    """The previewed recipients, as the confirm will create them: the variable names once, then
    one ``[to, line, values…]`` row each; JSON, zlib, base64 (a 100,000-row file: about 1 MB).
    The confirm creates exactly what was previewed, without reading the file again."""
    names = parsed.variables
    rows = [[r["to"], r["line"], *(r["variables"][n] for n in names)] for r in parsed.recipients]
    blob = json.dumps({"names": names, "rows": rows}, separators=(",", ":")).encode()
    return base64.b64encode(zlib.compress(blob, 6)).decode()


def _unpack(packed: str, *, channel: str = "") -> list[dict[str, Any]]:
    data = json.loads(zlib.decompress(base64.b64decode(packed)))
    names = data["names"]
    rows = [{"to": to, "line": line, "variables": dict(zip(names, values, strict=True))}
            for to, line, *values in data["rows"]]  # fmt: skip
    if channel == "notify":  # the address column of a notify upload is the contact's id
        for row in rows:
            row["contact_id"] = row["to"]
    return rows


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


# --- watch ------------------------------------------------------------------------------------


def broadcast_detail(request: HttpRequest, pk: str) -> HttpResponse:
    broadcast = get_object_or_404(Broadcast, pk=pk)
    if request.method == "POST":
        return _control(request, broadcast)
    context = _ctx(request, f"Broadcast: {broadcast.name}", **_watch_context(request, broadcast))
    template = "dashboard/broadcast_body.html" if request.GET.get("partial") else "dashboard/broadcast.html"
    return render(request, template, context)


def _watch_context(request: HttpRequest, broadcast: Broadcast) -> dict[str, Any]:
    progress = bc_selectors.broadcast_progress(broadcast)
    status = broadcast.status
    return {
        "broadcast": broadcast,
        "progress": progress,
        "badge": badge(status),
        "icon": presentation.channel_icon(broadcast.channel, label=True),
        "can_control": request.user.has_perm(access.CONTROL_BROADCASTS),
        "can_download": request.user.has_perm(access.VIEW_RECIPIENTS),
        "may_pause": status in (BroadcastStatus.RUNNING, BroadcastStatus.SCHEDULED),
        "may_resume": status == BroadcastStatus.PAUSED,
        "may_cancel": status
        not in (BroadcastStatus.CANCELLED, BroadcastStatus.COMPLETED, BroadcastStatus.FAILED),
        "upload": BroadcastUpload.objects.filter(broadcast_id=broadcast.pk).defer("data").first(),
        "now": timezone.now(),
    }


def _control(request: HttpRequest, broadcast: Broadcast) -> HttpResponse:
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        messages.error(request, f"Unknown action {action[:40]!r}: pause, resume or cancel.")
        return HttpResponseRedirect(reverse("dashboard:broadcast", args=[broadcast.pk]), status=303)
    try:
        ACTIONS[action](broadcast, actor=f"operator:{request.user.get_username()}")
    except BroadcastError as exc:
        messages.error(request, f"Cannot {action}: {exc}")
    else:
        messages.success(request, {"pause": "Paused: nothing more is sent until you resume.",
                                   "resume": "Resumed.",
                                   "cancel": "Cancelled: nothing more is sent."}[action])  # fmt: skip
    return HttpResponseRedirect(reverse("dashboard:broadcast", args=[broadcast.pk]))


class _Echo:
    def write(self, value: str) -> str:
        return value


def broadcast_recipients_csv(request: HttpRequest, pk: str) -> StreamingHttpResponse:
    """Every recipient with its result, streamed (a 100,000-row broadcast is never held whole)."""
    broadcast = get_object_or_404(Broadcast, pk=pk)
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in bc_selectors.recipients_csv_rows(broadcast)), content_type="text/csv"
    )
    response["Content-Disposition"] = f'attachment; filename="broadcast-{broadcast.pk}.csv"'
    return response
