"""Broadcast services: create (validate, dedupe, bulk insert, idempotent), preview, the work
done off the request (import an uploaded CSV, write the body from a prompt), and the operator's
controls (pause / resume / cancel). The sending engine is ``broadcasts.engine``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Lower
from django.utils import timezone

from broadcasts import addresses, rendering, stopflags
from broadcasts.errors import BroadcastError, IdempotencyConflict, IllegalBroadcastTransition
from broadcasts.models import (
    Broadcast,
    BroadcastStatus,
    BroadcastUpload,
    Channel,
    Recipient,
    RecipientIntake,
    RecipientStatus,
)
from broadcasts.signals import progress_changed
from dossiers.models import Consent, ConsentStatus, Contact
from dossiers.services import InvalidPhoneNumber
from orchestrator.errors import AgentError, TransientError
from orchestrator.registry import call_hook

B, R = BroadcastStatus, RecipientStatus
MAX_RECIPIENTS = 100_000
INSERT_BATCH = 5_000
SENDING_CHANNELS = (Channel.SMS, Channel.WHATSAPP, Channel.EMAIL, Channel.NOTIFY)  # docs/broadcasts.md
NOTIFY_ADDRESS = "contact:"  # a notify recipient's address until routing chooses its channel
CONTACT_FILTER_KEYS = {"ids", "locale", "consent", "has_address"}
MAX_REJECTED_KEPT = 1_000  # rows refused at an import, kept for the watch page


@dataclass
class BroadcastCreated:
    broadcast: Broadcast
    created: bool
    rejected: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Row:
    line: int
    address: str
    contact_id: Any
    variables: dict[str, Any]


def broadcast_create(
    *, name: str, channel: str, body: str = "", template: str = "", prompt: str = "",
    subject: str = "", html: str = "",
    recipients: list[dict[str, Any]] | None = None, contact_list: Iterable[Any] | None = None,
    contact_filter: dict[str, Any] | None = None, scheduled_for: datetime | None = None,
    rate_per_second: float | None = None, senders: list[str] | None = None, idempotency_key: str = "",
    source: str = "", created_by: Any = None, start: bool = True,
    quiet_start: Any = None, quiet_end: Any = None, written: str = "", defer_intake: bool = False,
) -> BroadcastCreated:  # fmt: skip
    """Create a broadcast and its recipients in one transaction (bulk inserts).

    Bad recipients are ``rejected`` (line, address, reason) and the good ones are created; a
    broadcast with no good recipient is a BroadcastError. The same (source, idempotency_key)
    with the same request returns the first broadcast (``created`` False) and writes nothing;
    with another request, IdempotencyConflict.

    With a ``prompt`` the broadcast is ``writing``: the task ``broadcasts.write_body`` asks the
    content agent once, then it starts (``written``: the body already written for this prompt,
    e.g. the one the operator previewed — no model call at all). With ``defer_intake`` (the
    console's confirm) only the broadcast and its ``recipients`` as one compressed row are
    written here (``importing``); the task ``broadcasts.import_recipients`` inserts them.
    """
    content = _check_content(channel=channel, body=body, template=template, prompt=prompt, subject=subject,
                             html=html, written=written)  # fmt: skip
    request_hash = _request_hash(name, channel, body, template, prompt, recipients, contact_list,
                                 contact_filter, scheduled_for, rate_per_second, senders,
                                 *((subject, html) if subject or html else ()))  # fmt: skip
    if idempotency_key:
        existing = _existing(source, idempotency_key, request_hash)
        if existing is not None:
            return BroadcastCreated(existing, created=False)
    if rate_per_second is not None and rate_per_second < 0:
        raise BroadcastError("must be positive", field="rate_per_second")
    if senders is not None and not all(isinstance(s, str) and s.strip() for s in senders):
        raise BroadcastError("each sender must be a non-empty string", field="senders")
    broadcast = Broadcast(
        name=name, channel=channel, body=content if prompt else body, template=template, prompt=prompt,
        subject=subject, html=html, scheduled_for=scheduled_for, rate_per_second=rate_per_second or None,
        senders=list(senders or []), quiet_start=quiet_start, quiet_end=quiet_end, source=source,
        idempotency_key=idempotency_key, request_hash=request_hash, created_by=str(created_by or "")[:150],
        start_when_ready=start,
    )  # fmt: skip
    if defer_intake:
        return _create_importing(broadcast, recipients)
    # A long inline list is checked here (the 201 names each refused row) and imported by the
    # task: the request stores one compressed row instead of 100,000 (docs/broadcasts.md, "Intake").
    deferred = isinstance(recipients, list) and len(recipients) > settings.BROADCAST_INLINE_INTAKE_MAX
    rows, rejected = _audience(
        channel, recipients, contact_list, contact_filter, _every_text(content, subject, html),
        attach=not deferred,
    )  # fmt: skip
    if not rows:
        raise BroadcastError("no valid recipient", field="recipients")
    if deferred:
        return _create_importing(broadcast, [_checked_item(row) for row in rows], rejected=rejected)
    broadcast.status = _ready_status(broadcast)
    broadcast.total, broadcast.rejected = len(rows), len(rejected)
    broadcast.started_at = timezone.now() if broadcast.status == B.RUNNING else None
    try:
        with transaction.atomic():
            broadcast.save(force_insert=True)
            _insert_recipients(broadcast, rows)
            _after_ready(broadcast)
    except IntegrityError:
        if not idempotency_key:
            raise
        existing = _existing(source, idempotency_key, request_hash)  # a concurrent twin won
        if existing is None:
            raise
        return BroadcastCreated(existing, created=False)
    return BroadcastCreated(broadcast, created=True, rejected=rejected)


def broadcast_import(*, broadcast_id: Any) -> str:
    """Insert an ``importing`` broadcast's uploaded recipients (the task
    ``broadcasts.import_recipients``), all in one transaction, then start it (or schedule it,
    or hand it to the writer). Idempotent: a broadcast no longer ``importing`` — imported,
    failed, cancelled — or locked by another run of this task is left alone, so a redelivered
    task creates nothing twice; a worker lost mid-import rolls the transaction back and the
    upload is still there for the redelivery. Returns what it did."""
    with transaction.atomic():
        broadcast = _locked_in(broadcast_id, B.IMPORTING)
        if broadcast is None:
            return "nothing to import"
        upload = BroadcastUpload.objects.filter(broadcast_id=broadcast.id).first()
        if upload is None or not upload.data:
            _fail(broadcast, "the uploaded recipients are gone (nothing was imported)")
            return "failed"
        recipients = json.loads(zlib.decompress(bytes(upload.data)))
        try:
            content = _check_content(channel=broadcast.channel, body=broadcast.body, template=broadcast.template,
                                     prompt="" if broadcast.body else broadcast.prompt, subject=broadcast.subject,
                                     html=broadcast.html, written=broadcast.body)  # fmt: skip
            every = _every_text(content, broadcast.subject, broadcast.html)
            rows, rejected = _audience(broadcast.channel, recipients, None, None, every)
        except BroadcastError as exc:
            _fail(broadcast, f"{exc.field}: {exc}")
            return "failed"
        # Rows refused when the upload was made (an API request checks them first) stay counted.
        upload.rejected = (list(upload.rejected or []) + rejected)[:MAX_REJECTED_KEPT]
        if not rows:
            upload.save(update_fields=["rejected"])
            _fail(broadcast, f"no valid recipient ({len(rejected)} rows refused)")
            return "failed"
        _insert_recipients(broadcast, rows)
        now = timezone.now()
        broadcast.status = _ready_status(broadcast)
        broadcast.total, broadcast.rejected = len(rows), broadcast.rejected + len(rejected)
        broadcast.started_at = now if broadcast.status == B.RUNNING else None
        broadcast.save(update_fields=["status", "total", "rejected", "started_at", "updated_at"])
        upload.data, upload.imported_at = b"", now
        upload.save(update_fields=["data", "rejected", "imported_at"])
        _after_ready(broadcast)
        notify_progress(broadcast.id)
    return "imported"


def _locked_in(broadcast_id: Any, status: str) -> Broadcast | None:
    """The broadcast, row-locked, if it is in ``status`` and no other transaction holds it
    (a second run of its task then leaves it alone)."""
    return (
        Broadcast.objects.select_for_update(skip_locked=True).filter(id=broadcast_id, status=status).first()
    )


def broadcast_write_body(*, broadcast_id: Any) -> str:
    """A ``writing`` broadcast's body from its prompt (the task ``broadcasts.write_body``): the
    content agent is asked once, the body stored, and the broadcast starts (or waits for its
    schedule). The row stays locked while the model answers: a second run of the task finds it
    locked (or no longer ``writing``) and asks nothing. A permanent refusal fails the broadcast
    with the reason; a TransientError propagates (the task retries, then fails it)."""
    with transaction.atomic():
        broadcast = _locked_in(broadcast_id, B.WRITING)
        if broadcast is None:
            return "nothing to write"
        if not broadcast.body:
            try:
                broadcast.body = _written_from(prompt=broadcast.prompt, channel=broadcast.channel)
            except BroadcastError as exc:
                if isinstance(exc.__cause__, TransientError):
                    raise exc.__cause__ from None
                _fail(broadcast, str(exc))
                return "failed"
        now = timezone.now()
        broadcast.status = _ready_status(broadcast)
        broadcast.started_at = now if broadcast.status == B.RUNNING else None
        broadcast.save(update_fields=["body", "status", "started_at", "updated_at"])
        _after_ready(broadcast)
        notify_progress(broadcast.id)
    return "written"


def broadcast_fail(*, broadcast_id: Any, reason: str) -> bool:
    """An ``importing`` or ``writing`` broadcast whose task gave up: failed, with the reason."""
    with transaction.atomic():
        broadcast = (
            Broadcast.objects.select_for_update()
            .filter(id=broadcast_id, status__in=[B.IMPORTING, B.WRITING])
            .first()
        )
        if broadcast is None:
            return False
        _fail(broadcast, reason)
    return True


def broadcast_preview(
    *, channel: str, body: str = "", template: str = "", prompt: str = "", subject: str = "", html: str = "",
    recipients: list[dict[str, Any]], limit: int = 5, name: str = "",
) -> list[dict[str, Any]]:  # fmt: skip
    """The first ``limit`` recipients' rendered messages (or why each cannot be sent); writes
    nothing. With a prompt, the content agent writes the body first (once): the caller may keep
    it (``written`` of the first row) and give it to ``broadcast_create``. A notify recipient is
    shown as it would be sent by email (subject, text, HTML)."""
    content = _check_content(channel=channel, body=body, template=template, prompt=prompt, subject=subject,
                             html=html)  # fmt: skip
    if prompt:
        content = _written_from(prompt=prompt, channel=channel)
    every = _every_text(content, subject, html)
    shape = Broadcast(name=name, channel=channel, body=content, template=template, subject=subject, html=html)
    shown_as = Channel.EMAIL if channel in (Channel.EMAIL, Channel.NOTIFY) else channel
    out: list[dict[str, Any]] = []
    for line, item in enumerate(recipients or [], 1):
        if len(out) >= limit:
            break
        row, reason = _row(channel, line, item, every)
        if row is None:
            out.append({"line": line, "to": _raw_to(item), "error": reason})
            continue
        try:
            parts = message_parts(shape, shown_as, row.variables)
        except rendering.RenderError as exc:
            out.append({"line": line, "to": row.address, "error": str(exc)})
            continue
        shown = {"line": line, "to": row.address, **parts}
        if prompt:
            shown["written"] = content
        if channel not in (Channel.EMAIL, Channel.NOTIFY):
            shown.pop("subject", None)
        out.append(shown)
    return out


def broadcast_write_text(*, prompt: str, channel: str) -> str:
    """The content agent's body for ``prompt`` (one model call), e.g. for the console's preview:
    give it back to ``broadcast_create(written=…)`` to send what was previewed."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise BroadcastError("the prompt is empty", field="prompt")
    return _written_from(prompt=prompt, channel=channel)


def message_parts(broadcast: Broadcast, channel: str, variables: dict[str, Any]) -> dict[str, str]:
    """One recipient's message on ``channel``: ``body`` (and by email ``subject`` and, when
    there is one, ``html``). An email template (``email.render_template``) gives the body and
    the HTML part; a messaging template its text body; else the broadcast's ``body``.
    RenderError when the recipient's variables do not fill it."""
    subject = ""
    if channel == Channel.EMAIL:
        subject = rendering.render(broadcast.subject or broadcast.name, variables)
    text = _template_text(broadcast, channel) if broadcast.template else broadcast.body
    if broadcast.template and (channel == Channel.EMAIL or not text):
        rendered = call_hook("email.render_template", template=broadcast.template, variables=variables,
                             subject=subject)  # fmt: skip
        if not rendered:
            raise rendering.RenderError(f"no email template named {broadcast.template!r}")
        if channel != Channel.EMAIL:
            return {"body": rendered["text"]}
        return {"body": rendered["text"], "subject": subject, "html": rendered["html"]}
    parts = {"body": rendering.render(text, variables)}
    if channel == Channel.EMAIL:
        parts["subject"] = subject
        if broadcast.html:
            parts["html"] = rendering.render(broadcast.html, variables, html=True)
    return parts


def broadcast_start(broadcast: Broadcast, *, actor: str) -> Broadcast:
    """A draft (or a scheduled broadcast whose time came) starts sending."""
    updated = Broadcast.objects.filter(id=broadcast.id, status__in=[B.DRAFT, B.SCHEDULED]).update(
        status=B.RUNNING, started_at=timezone.now(), updated_at=timezone.now()
    )
    if not updated:
        raise IllegalBroadcastTransition(f"a {broadcast.status} broadcast cannot start")
    transaction.on_commit(lambda: _kick(broadcast.id))
    return _reload(broadcast)


def broadcast_pause(broadcast: Broadcast, *, actor: str) -> Broadcast:
    """Stop sending; recipients not yet sent stay pending. In-flight batches stop before their
    next provider call (a Redis flag, checked before each call) and give their rest back."""
    return _control(broadcast, to=B.PAUSED, allowed=[B.RUNNING, B.SCHEDULED], actor=actor)


def broadcast_resume(broadcast: Broadcast, *, actor: str) -> Broadcast:
    broadcast = _control(broadcast, to=B.RUNNING, allowed=[B.PAUSED], actor=actor)
    transaction.on_commit(lambda: _kick(broadcast.id))
    return broadcast


def broadcast_cancel(broadcast: Broadcast, *, actor: str) -> Broadcast:
    """Nothing more leaves once this returns: the flag is up before the answer, every pending
    recipient becomes ``cancelled``, and a batch in flight checks the flag before each call."""
    broadcast = _control(broadcast, to=B.CANCELLED, allowed=[B.IMPORTING, B.WRITING, B.DRAFT, B.SCHEDULED,
                         B.RUNNING, B.PAUSED], actor=actor)  # fmt: skip
    Recipient.objects.filter(broadcast_id=broadcast.id, status=R.PENDING).update(
        status=R.CANCELLED, reason="broadcast cancelled", updated_at=timezone.now()
    )
    _drop_upload_data(broadcast.id)
    return broadcast


def broadcast_finish_if_done(*, broadcast_id: Any) -> bool:
    """Mark a running broadcast completed once no recipient is pending or sending."""
    if Recipient.objects.filter(broadcast_id=broadcast_id, status__in=[R.PENDING, R.SENDING]).exists():
        return False
    now = timezone.now()
    return bool(
        Broadcast.objects.filter(id=broadcast_id, status=B.RUNNING).update(
            status=B.COMPLETED, finished_at=now, updated_at=now
        )
    )


def notify_progress(broadcast_id: Any) -> None:
    """Send ``progress_changed`` once the current transaction commits."""
    transaction.on_commit(lambda: progress_changed.send(sender=Broadcast, broadcast_id=str(broadcast_id)))


# --- internals ---------------------------------------------------------------------------------


def _control(broadcast: Broadcast, *, to: str, allowed: list[str], actor: str) -> Broadcast:
    now = timezone.now()
    fields: dict[str, Any] = {"status": to, "updated_at": now}
    if to == B.CANCELLED:
        fields["finished_at"] = now
    with transaction.atomic():
        if not Broadcast.objects.filter(id=broadcast.id, status__in=allowed).update(**fields):
            current = Broadcast.objects.filter(id=broadcast.id).values_list("status", flat=True).first()
            raise IllegalBroadcastTransition(f"a {current or 'deleted'} broadcast cannot become {to}")
        notify_progress(broadcast.id)
    # The flag after the commit: a batch that reads it sees the new status in the database too.
    if to in (B.PAUSED, B.CANCELLED):
        stopflags.raise_flag(broadcast.id)
    else:
        stopflags.lower_flag(broadcast.id)
    return _reload(broadcast)


def _ready_status(broadcast: Broadcast) -> str:
    """Where a broadcast goes once it has its recipients (and its body): ``writing`` while a
    prompt has no body yet; then running, scheduled, or a draft (``start_when_ready`` False)."""
    if broadcast.prompt and not broadcast.body:
        return B.WRITING
    if not broadcast.start_when_ready:
        return B.DRAFT
    if broadcast.scheduled_for and broadcast.scheduled_for > timezone.now():
        return B.SCHEDULED
    return B.RUNNING


def _after_ready(broadcast: Broadcast) -> None:
    """After the commit: the first batches of a running broadcast, or the writer of a prompt."""
    if broadcast.status == B.RUNNING:
        transaction.on_commit(lambda: _kick(broadcast.id))
    elif broadcast.status == B.WRITING:
        transaction.on_commit(lambda: _enqueue("write_body", broadcast.id))


def _create_importing(
    broadcast: Broadcast, recipients: Any, *, rejected: list[dict[str, Any]] | None = None
) -> BroadcastCreated:
    """The broadcast (``importing``) and its recipients as one compressed row; the import task
    is queued after the commit (its message carries only the id). ``rejected``: the rows the
    caller already refused (an API request checks its list before it is stored); then the
    broadcast's counts are known now and the 201 names each refused row."""
    if not isinstance(recipients, list) or not recipients:
        raise BroadcastError("give the recipients to import (a non-empty list)", field="recipients")
    if len(recipients) > MAX_RECIPIENTS:
        raise BroadcastError(f"at most {MAX_RECIPIENTS} recipients per broadcast", field="recipients")
    # Level 1: a tenth of level 6's time for 100,000 rows, and the row is emptied once imported.
    blob = zlib.compress(json.dumps(recipients, separators=(",", ":"), default=str).encode(), 1)
    broadcast.status = B.IMPORTING
    if rejected is not None:
        broadcast.total, broadcast.rejected = len(recipients), len(rejected)
    try:
        with transaction.atomic():
            broadcast.save(force_insert=True)
            BroadcastUpload.objects.create(broadcast=broadcast, data=blob, rows=len(recipients),
                                           rejected=(rejected or [])[:MAX_REJECTED_KEPT])  # fmt: skip
            transaction.on_commit(lambda: _enqueue("import_recipients", broadcast.id))
    except IntegrityError:
        existing = broadcast.idempotency_key and _existing(
            broadcast.source, broadcast.idempotency_key, broadcast.request_hash
        )
        if not existing:
            raise
        return BroadcastCreated(existing, created=False)
    return BroadcastCreated(broadcast, created=True, rejected=rejected or [])


def _checked_item(row: _Row) -> dict[str, Any]:
    """A recipient the request checked, as the import reads it back: its line, its normalised
    address (or contact id for notify), its variables."""
    item: dict[str, Any] = {"line": row.line, "variables": row.variables}
    if row.address.startswith(NOTIFY_ADDRESS):
        item["contact_id"] = row.contact_id
    else:
        item["to"] = row.address
        if row.contact_id:
            item["contact_id"] = row.contact_id
    return item


def _fail(broadcast: Broadcast, reason: str) -> None:
    """Failed with the reason; its recipients (a prompt's, written after them) are not sent."""
    now = timezone.now()
    broadcast.status, broadcast.error, broadcast.finished_at = B.FAILED, reason[:2000], now
    broadcast.save(update_fields=["status", "error", "finished_at", "updated_at"])
    Recipient.objects.filter(broadcast_id=broadcast.id, status=R.PENDING).update(
        status=R.SKIPPED, reason=f"broadcast failed: {reason}"[:200], updated_at=now
    )
    _drop_upload_data(broadcast.id)
    notify_progress(broadcast.id)


def _drop_upload_data(broadcast_id: Any) -> None:
    """A broadcast that will never import (failed, cancelled) does not keep its uploaded rows
    (megabytes for 100,000); the rows refused at import stay for the watch page."""
    BroadcastUpload.objects.filter(broadcast_id=broadcast_id, imported_at__isnull=True).update(data=b"")


def _enqueue(task: str, broadcast_id: Any) -> None:
    from broadcasts import tasks

    getattr(tasks, task).apply_async(args=[str(broadcast_id)], queue=tasks.QUEUE)


def _reload(broadcast: Broadcast) -> Broadcast:
    broadcast.refresh_from_db()
    return broadcast


def _kick(broadcast_id: Any) -> None:
    from broadcasts.tasks import kick

    kick(broadcast_id)


def _check_content(
    *, channel: str, body: str, template: str, prompt: str, subject: str = "", html: str = "",
    written: str = "",
) -> str:  # fmt: skip
    """The body template whose placeholders each recipient must fill: the body, a messaging
    template's text, the body ``written`` for a prompt — "" for a prompt not written yet (the
    content agent writes it off the request, ``broadcast_write_body``) and for an email
    template (Django's template language: it renders what the recipient's variables give)."""
    if channel not in Channel.values:
        raise BroadcastError(f"one of {', '.join(Channel.values)}", field="channel")
    given = [name for name, value in (("body", body), ("template", template), ("prompt", prompt)) if value]
    if len(given) != 1:
        raise BroadcastError("give exactly one of body, template or prompt", field="body")
    _check_email_parts(channel=channel, template=template, subject=subject, html=html)
    if prompt:
        if not isinstance(prompt, str) or not prompt.strip():
            raise BroadcastError("the prompt is empty", field="prompt")
        return written or ""
    if template and channel in (Channel.EMAIL, Channel.NOTIFY):
        problem = call_hook("email.template_problem", template=template)
        if problem:
            raise BroadcastError(problem, field="template")
        return ""
    if template:
        text = call_hook("messaging.template_body", template=template, channel=channel, locale="en")
        if not text:
            raise BroadcastError(
                f"no {channel} template named {template!r} with a text body", field="template"
            )
        return text
    return body


def _check_email_parts(*, channel: str, template: str, subject: str, html: str) -> None:
    if channel == Channel.EMAIL and not (isinstance(subject, str) and subject.strip()):
        raise BroadcastError("an email broadcast needs a subject", field="subject")
    if channel not in (Channel.EMAIL, Channel.NOTIFY) and (subject or html):
        raise BroadcastError(f"subject and html are for email broadcasts, not {channel}", field="subject")
    if template and html:
        raise BroadcastError(
            "the template gives the HTML part: give template or html, not both", field="html"
        )


_template_texts: dict[tuple[Any, str], str] = {}


def _template_text(broadcast: Broadcast, channel: str) -> str:
    """A messaging template's text body for ``channel`` ("" when there is none: by email, and
    for a notify recipient routed to SMS / WhatsApp when only an email template has the name,
    whose text part is then the message). Read once per saved broadcast and channel (a template
    edited later changes the next broadcast, not one already sending)."""
    if channel not in (Channel.SMS, Channel.WHATSAPP):
        return ""
    key = (broadcast.id, channel)
    text = None if broadcast._state.adding else _template_texts.get(key)
    if text is None:
        text = (
            call_hook("messaging.template_body", template=broadcast.template, channel=channel, locale="en")
            or ""
        )
        if not broadcast._state.adding:
            _template_texts[key] = text
    return text


def _written_from(*, prompt: str, channel: str) -> str:
    """The content agent writes the body template once for the whole broadcast."""
    try:
        text = call_hook("content.write_template", prompt=prompt, channel=channel)
    except AgentError as exc:
        raise BroadcastError(
            f"the content agent could not write a body: {exc.message}", field="prompt"
        ) from exc
    if not text:
        raise BroadcastError("the content agent wrote nothing for this prompt", field="prompt")
    return text


def _every_text(*parts: str) -> str:
    """Every part a recipient's variables must fill (body, subject, HTML), for validation."""
    return "\n".join(p for p in parts if p)


def _request_hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _existing(source: str, key: str, request_hash: str) -> Broadcast | None:
    existing = Broadcast.objects.filter(source=source, idempotency_key=key).first()
    if existing is not None and existing.request_hash != request_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with another request", field="Idempotency-Key"
        )
    return existing


def _audience(
    channel, recipients, contact_list, contact_filter, content, *, attach: bool = True
) -> tuple[list[_Row], list[dict]]:
    sources = [s is not None for s in (recipients, contact_list, contact_filter)]
    if sum(sources) != 1:
        raise BroadcastError(
            "give exactly one of recipients, contact_list or contact_filter", field="recipients"
        )
    if recipients is not None:
        if not isinstance(recipients, list):
            raise BroadcastError("must be a list", field="recipients")
        items = recipients
    else:
        items = _contact_items(channel, contact_list, contact_filter)
    if len(items) > MAX_RECIPIENTS:
        raise BroadcastError(f"at most {MAX_RECIPIENTS} recipients per broadcast", field="recipients")
    rows: list[_Row] = []
    rejected: list[dict[str, Any]] = []
    seen: set[str] = set()
    needed = sorted(rendering.placeholders(content))
    for index, item in enumerate(items, 1):
        line = _given_line(item) or index
        row, reason = _row(channel, line, item, content, needed)
        if row is None:
            rejected.append({"line": line, "address": _raw_to(item), "reason": reason})
        elif row.address in seen:
            rejected.append({"line": line, "address": row.address, "reason": "duplicate"})
        else:
            seen.add(row.address)
            rows.append(row)
    if attach:  # else the import links them, off the request
        _attach_contacts(channel, rows)
    if channel == Channel.NOTIFY:
        rows = _known_contacts(rows, rejected)
    return rows, rejected


def _known_contacts(rows: list[_Row], rejected: list[dict[str, Any]]) -> list[_Row]:
    """Notify recipients whose contact exists (the others rejected with their line)."""
    known: set[str] = set()
    for start in range(0, len(rows), INSERT_BATCH):
        ids = [str(r.contact_id) for r in rows[start : start + INSERT_BATCH]]
        try:
            known.update(str(i) for i in Contact.objects.filter(id__in=ids).values_list("id", flat=True))
        except ValidationError:  # an id that is not a UUID: checked one by one below
            for one in ids:
                with contextlib.suppress(ValidationError):
                    known.update(str(i) for i in Contact.objects.filter(id=one).values_list("id", flat=True))
    for row in rows:
        if str(row.contact_id) not in known:
            rejected.append(
                {"line": row.line, "address": str(row.contact_id)[:254], "reason": "no such contact"}
            )
    return [row for row in rows if str(row.contact_id) in known]


def _given_line(item: Any) -> int | None:
    """The input's own line number when the caller gives one (the console's CSV upload), so the
    per-recipient results name the line of the operator's file."""
    line = item.get("line") if isinstance(item, dict) else None
    return line if type(line) is int and 0 < line < 2**31 else None


def _raw_to(item: Any) -> str:
    return str(item.get("to") or item.get("contact_id") or "")[:254] if isinstance(item, dict) else ""


def _row(
    channel: str, line: int, item: Any, content: str, needed: list[str] | None = None
) -> tuple[_Row | None, str]:
    """One input recipient checked: (the row, "") or (None, the reason). ``needed`` is the body's
    placeholders, computed once per broadcast by ``_audience`` (checking them per row is what
    ``rendering.render`` would refuse, without rendering 100,000 bodies)."""
    if not isinstance(item, dict):
        return None, "each recipient must be an object with 'to' (or 'contact_id') and 'variables'"
    variables = item.get("variables") or {}
    if not isinstance(variables, dict):
        return None, "variables must be an object"
    address, reason = _address(channel, item)
    if not address:
        return None, reason
    if needed is None:
        try:
            rendering.render(content, variables)
        except rendering.RenderError as exc:
            return None, str(exc)
    else:
        missing = [name for name in needed if variables.get(name) in (None, "")]
        if missing:
            return None, f"missing variable(s): {', '.join(missing)}"
    return _Row(line, address, item.get("contact_id"), variables), ""


def _address(channel: str, item: dict[str, Any]) -> tuple[str, str]:
    """The recipient's address on the channel (E.164, an email address), or "" and why not. A
    notify recipient is a contact: routing picks its address when its batch is sent."""
    if channel == Channel.NOTIFY:
        contact_id = item.get("contact_id")
        if not contact_id:
            return "", "a notify recipient needs a contact_id (routing picks among the contact's addresses)"
        return f"{NOTIFY_ADDRESS}{contact_id}"[:254], ""
    to = item.get("to")
    if not isinstance(to, str) or not to.strip():
        return "", "'to' is missing"
    if channel == Channel.EMAIL:
        try:
            validate_email(to.strip())
        except ValidationError:
            return "", "not an email address"
        return to.strip().lower(), ""
    try:
        return addresses.normalize(to), ""
    except InvalidPhoneNumber as exc:
        return "", str(exc)


def _contact_items(channel: str, contact_list, contact_filter) -> list[dict[str, Any]]:
    contacts = Contact.objects.filter(synthetic=False)
    if contact_list is not None:
        ids = list(contact_list)
        contacts = contacts.filter(id__in=ids)
    else:
        if not isinstance(contact_filter, dict) or set(contact_filter) - CONTACT_FILTER_KEYS:
            raise BroadcastError(
                f"an object with keys among {sorted(CONTACT_FILTER_KEYS)}", field="contact_filter"
            )
        if "ids" in contact_filter:
            contacts = contacts.filter(id__in=contact_filter["ids"])
        if contact_filter.get("locale"):
            contacts = contacts.filter(locale=contact_filter["locale"])
        if contact_filter.get("consent") == ConsentStatus.OPTED_IN:
            opted_in = Consent.objects.filter(channel=channel, status=ConsentStatus.OPTED_IN)
            contacts = contacts.filter(id__in=opted_in.values("contact_id"))
    if channel == Channel.NOTIFY:
        return [
            {"contact_id": cid, "variables": {"name": name, "locale": locale}}
            for cid, name, locale in contacts.order_by("created_at").values_list("id", "name", "locale")
        ]
    column = {Channel.WHATSAPP: "whatsapp", Channel.EMAIL: "email"}.get(channel, "phone")
    rows = contacts.exclude(**{column: ""}).order_by("created_at").values_list("id", column, "name", "locale")
    return [
        {"to": address, "contact_id": cid, "variables": {"name": name, "locale": locale}}
        for cid, address, name, locale in rows.iterator(chunk_size=5000)
    ]


def _attach_contacts(channel: str, rows: list[_Row]) -> None:
    """Link recipients to the dossier contacts with their number (chunked IN queries)."""
    pending = [row for row in rows if not row.contact_id]
    if channel == Channel.EMAIL:
        # Email addresses are matched case-insensitively, as the dossiers do (their unique index
        # is on lower(email), non-empty): the recipient's address is lower-cased already.
        contacts = Contact.objects.exclude(email="").annotate(key=Lower("email"))
    else:
        contacts = Contact.objects.annotate(key=F("phone"))
    for start in range(0, len(pending), INSERT_BATCH):
        chunk = pending[start : start + INSERT_BATCH]
        found = dict(contacts.filter(key__in=[r.address for r in chunk]).values_list("key", "id"))
        for row in chunk:
            row.contact_id = found.get(row.address)


def _insert_recipients(broadcast: Broadcast, rows: list[_Row]) -> None:
    """Bulk INSERTs of the five columns intake knows, through ``RecipientIntake`` (the same
    table; the other columns take their database defaults). Django 5.2 sends each batch as one
    ``INSERT … SELECT * FROM UNNEST(…)``. Rows are built with positional arguments in field
    order (Model.__init__'s fast path); tests/broadcasts/test_intake.py pins that order."""
    bid = broadcast.id
    for start in range(0, len(rows), INSERT_BATCH):
        batch = rows[start : start + INSERT_BATCH]
        RecipientIntake.objects.bulk_create(
            [RecipientIntake(None, bid, r.line, r.address, r.contact_id, r.variables) for r in batch]
        )
