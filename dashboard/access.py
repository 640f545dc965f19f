"""Who may do what in the console and the dossier API: the roles and the privacy table.

Three roles, as Django groups a data migration creates (``0002_h16a_roles``): operator,
supervisor, admin. Being staff only opens the admin's door; every page, action, websocket
and API endpoint below also needs the named permission. ``ROLES`` is the source of the
groups, ``ACCESS`` the source of ``docs/privacy.md``'s role table and of the test that
tries every row with every role (``tests/security/test_roles.py``).

A refusal is a 403 and an ``AuditLog`` row (``action=denied``): ``refuse()`` for the
console's own views, ``dossiers.middleware.AuditRefusals`` for every other 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

# The console's own permissions (Meta.permissions of dashboard.models.Console).
USE_CONSOLE = "dashboard.use_console"  # console pages and their live websockets
WORK_INBOX = "dashboard.work_inbox"  # claim, release, reply, resolve
OPERATE_TASKS = "dashboard.operate_tasks"  # retry, cancel, hang up
SUPERVISE = "dashboard.supervise"  # supervisor view, assign to others
VIEW_OPERATIONS = "dashboard.view_operations"  # configuration report and connectivity checks
# The dossier's (Django's model permissions of dossiers.Contact plus one of its own).
VIEW_DOSSIERS = "dossiers.view_contact"  # contacts, timelines, artifacts, avatars
CHANGE_CONTACTS = "dossiers.change_contact"  # consent, avatar, contact fields
ADD_CONTACTS = "dossiers.add_contact"
EXPORT_DOSSIERS = "dossiers.export_contact"
ERASE_CONTACTS = "dossiers.delete_contact"  # erasure (admin Delete, which runs forget_contact)
VIEW_TASKS = "orchestrator.view_task"
# Broadcasts (Django's model permissions of broadcasts.Broadcast and .Recipient).
VIEW_BROADCASTS = "broadcasts.view_broadcast"  # the list, a broadcast's progress, its live socket
CREATE_BROADCASTS = "broadcasts.add_broadcast"  # upload a CSV, preview, confirm
CONTROL_BROADCASTS = "broadcasts.change_broadcast"  # pause, resume, cancel
VIEW_RECIPIENTS = "broadcasts.view_recipient"  # the per-recipient results (addresses: PII)
VIEW_DIGESTS = "orchestrator.view_digest"  # the digests of notify tasks (open, sent, item counts)

_OPERATOR = {
    USE_CONSOLE,
    WORK_INBOX,
    VIEW_DOSSIERS,
    VIEW_TASKS,
    VIEW_DIGESTS,
    "dashboard.view_cannedresponse",
}
_SUPERVISOR = _OPERATOR | {
    OPERATE_TASKS,
    SUPERVISE,
    CHANGE_CONTACTS,
    ADD_CONTACTS,
    EXPORT_DOSSIERS,
    "dashboard.add_cannedresponse",
    "dashboard.change_cannedresponse",
    "dashboard.delete_cannedresponse",
    "dashboard.view_operatorprofile",
    "dashboard.change_operatorprofile",
    "dashboard.view_inboxitem",
    "dossiers.view_auditlog",
    # Outbound webhooks: the endpoints and the delivery log (its payloads carry PII), read only.
    "event_webhooks.view_webhookendpoint",
    "event_webhooks.view_endpointevent",
    "event_webhooks.view_webhookdelivery",
    "event_webhooks.view_webhookattempt",
    # Broadcasts: run them (create, pause, resume, cancel) and read their recipients' results.
    VIEW_BROADCASTS,
    CREATE_BROADCASTS,
    CONTROL_BROADCASTS,
    VIEW_RECIPIENTS,
    "orchestrator.change_digest",  # "send the selected open digests now"
}
_ADMIN = _SUPERVISOR | {
    VIEW_OPERATIONS,
    ERASE_CONTACTS,
    "orchestrator.view_agentregistration",
    "orchestrator.change_agentregistration",
    "orchestrator.add_agentregistration",
    "orchestrator.view_routingrule",
    "orchestrator.change_routingrule",
    "orchestrator.add_routingrule",
    "orchestrator.delete_routingrule",
    "orchestrator.view_apikey",
    "orchestrator.add_apikey",
    "orchestrator.change_apikey",
    "dashboard.add_operatorprofile",
    "auth.view_user",
    "auth.add_user",
    "auth.change_user",
    "auth.view_group",
    # Outbound webhooks: create, edit (enable, disable, rotate the secret), delete; resend.
    "event_webhooks.add_webhookendpoint",
    "event_webhooks.change_webhookendpoint",
    "event_webhooks.delete_webhookendpoint",
    "event_webhooks.change_webhookdelivery",
}

# group name -> permissions ("app_label.codename"); the migration creates exactly these.
ROLES: dict[str, frozenset[str]] = {
    "operator": frozenset(_OPERATOR),
    "supervisor": frozenset(_SUPERVISOR),
    "admin": frozenset(_ADMIN),
}


@dataclass(frozen=True)
class Access:
    """One thing a person can read or do, the permission it needs, and how to try it."""

    what: str
    kind: str  # page, action, websocket, api
    method: str  # GET, POST, WS
    path: str  # with {task}, {conversation}, {contact}, {artifact}, {call}, {correlation}, {endpoint}, {delivery}, {broadcast} placeholders
    perm: str


ACCESS: list[Access] = [
    Access("The old inbox address (leads to the conversations)", "page", "GET", "/admin/inbox/", USE_CONSOLE),
    Access("Conversations inbox", "page", "GET", "/admin/conversations/", USE_CONSOLE),
    Access("Set yourself available / away", "action", "POST", "/admin/conversations/#available", WORK_INBOX),
    Access(
        "A conversation (thread, contact, notes)",
        "page",
        "GET",
        "/admin/conversations/{conversation}/",
        USE_CONSOLE,
    ),
    Access("Take a conversation", "action", "POST", "/admin/conversations/{conversation}/#claim", WORK_INBOX),
    Access("Reply to a customer", "action", "POST", "/admin/conversations/{conversation}/#reply", WORK_INBOX),
    Access("Add a private note", "action", "POST", "/admin/conversations/{conversation}/#note", WORK_INBOX),
    Access(
        "Resolve a conversation (and its tasks)",
        "action",
        "POST",
        "/admin/conversations/{conversation}/#resolve",
        WORK_INBOX,
    ),
    Access(
        "Assign a conversation to another",
        "action",
        "POST",
        "/admin/conversations/{conversation}/#assign",
        SUPERVISE,
    ),
    Access("Supervisor view", "page", "GET", "/admin/supervisor/", SUPERVISE),
    Access("Live calls", "page", "GET", "/admin/calls/", USE_CONSOLE),
    Access("A call", "page", "GET", "/admin/calls/{call}/", USE_CONSOLE),
    Access("Hang up a call", "action", "POST", "/admin/calls/{call}/", OPERATE_TASKS),
    Access("Agent health", "page", "GET", "/admin/health/", USE_CONSOLE),
    Access("Configuration and connectivity", "page", "GET", "/admin/operations/", VIEW_OPERATIONS),
    Access("Run connectivity checks", "action", "POST", "/admin/operations/", VIEW_OPERATIONS),
    Access("Tasks list", "page", "GET", "/admin/orchestrator/task/", VIEW_TASKS),
    Access("A task", "page", "GET", "/admin/orchestrator/task/{task}/change/", VIEW_TASKS),
    Access("Retry a task", "action", "POST", "/admin/orchestrator/task/{task}/retry/", OPERATE_TASKS),
    Access("Cancel a task", "action", "POST", "/admin/orchestrator/task/{task}/cancel/", OPERATE_TASKS),
    Access(
        "Digests list (open, sent, item counts)", "page", "GET", "/admin/orchestrator/digest/", VIEW_DIGESTS
    ),
    Access("Contacts list", "page", "GET", "/admin/dossiers/contact/", VIEW_DOSSIERS),
    Access("A contact's dossier", "page", "GET", "/admin/dossiers/contact/{contact}/change/", VIEW_DOSSIERS),
    Access("Erase a contact", "page", "GET", "/admin/dossiers/contact/{contact}/delete/", ERASE_CONTACTS),
    Access("Audit log", "page", "GET", "/admin/dossiers/auditlog/", "dossiers.view_auditlog"),
    Access("API keys", "page", "GET", "/admin/orchestrator/apikey/", "orchestrator.view_apikey"),
    Access(
        "Webhook endpoints",
        "page",
        "GET",
        "/admin/event_webhooks/webhookendpoint/",
        "event_webhooks.view_webhookendpoint",
    ),
    Access(
        "A webhook endpoint (its events, its deliveries)",
        "page",
        "GET",
        "/admin/event_webhooks/webhookendpoint/{endpoint}/change/",
        "event_webhooks.view_webhookendpoint",
    ),
    Access(
        "Add a webhook endpoint",
        "page",
        "GET",
        "/admin/event_webhooks/webhookendpoint/add/",
        "event_webhooks.add_webhookendpoint",
    ),
    Access(
        "Webhook delivery log",
        "page",
        "GET",
        "/admin/event_webhooks/webhookdelivery/",
        "event_webhooks.view_webhookdelivery",
    ),
    Access(
        "A webhook delivery (payload, attempts)",
        "page",
        "GET",
        "/admin/event_webhooks/webhookdelivery/{delivery}/change/",
        "event_webhooks.view_webhookdelivery",
    ),
    Access(
        "Webhook endpoints (API, signed in)",
        "api",
        "GET",
        "/api/webhook-endpoints/",
        "event_webhooks.view_webhookendpoint",
    ),
    Access("Broadcasts", "page", "GET", "/admin/broadcasts/", VIEW_BROADCASTS),
    Access("A broadcast (live progress)", "page", "GET", "/admin/broadcasts/{broadcast}/", VIEW_BROADCASTS),
    Access("New broadcast (upload a CSV)", "page", "GET", "/admin/broadcasts/new/", CREATE_BROADCASTS),
    Access(
        "Preview and confirm a broadcast",
        "action",
        "POST",
        "/admin/broadcasts/new/#preview",
        CREATE_BROADCASTS,
    ),
    Access("Pause a broadcast", "action", "POST", "/admin/broadcasts/{broadcast}/#pause", CONTROL_BROADCASTS),
    Access(
        "Resume a broadcast", "action", "POST", "/admin/broadcasts/{broadcast}/#resume", CONTROL_BROADCASTS
    ),
    Access(
        "Cancel a broadcast", "action", "POST", "/admin/broadcasts/{broadcast}/#cancel", CONTROL_BROADCASTS
    ),
    Access(
        "A broadcast's per-recipient results (CSV)",
        "page",
        "GET",
        "/admin/broadcasts/{broadcast}/recipients.csv",
        VIEW_RECIPIENTS,
    ),
    Access("Broadcasts (admin list)", "page", "GET", "/admin/broadcasts/broadcast/", VIEW_BROADCASTS),
    Access(
        "Broadcast recipients (admin list)", "page", "GET", "/admin/broadcasts/recipient/", VIEW_RECIPIENTS
    ),
    Access("Task live updates", "websocket", "WS", "/ws/tasks/{task}/", USE_CONSOLE),
    Access("Inbound queue live updates", "websocket", "WS", "/ws/inbox/", USE_CONSOLE),
    Access("Live call transcript", "websocket", "WS", "/ws/calls/{call}/", USE_CONSOLE),
    Access("A broadcast's live progress", "websocket", "WS", "/ws/broadcasts/{broadcast}/", VIEW_BROADCASTS),
    Access("Contacts (API)", "api", "GET", "/api/contacts/", VIEW_DOSSIERS),
    Access("A contact (API)", "api", "GET", "/api/contacts/{contact}/", VIEW_DOSSIERS),
    Access("A contact's timeline (API)", "api", "GET", "/api/contacts/{contact}/timeline/", VIEW_DOSSIERS),
    Access("A contact's avatar (API)", "api", "GET", "/api/contacts/{contact}/avatar/", VIEW_DOSSIERS),
    Access(
        "A correlation's timeline (API)",
        "api",
        "GET",
        "/api/correlations/{correlation}/timeline/",
        VIEW_DOSSIERS,
    ),
    Access("Export a dossier (API)", "api", "GET", "/api/contacts/{contact}/export/", EXPORT_DOSSIERS),
    Access("Change consent (API)", "api", "POST", "/api/contacts/{contact}/consent/", CHANGE_CONTACTS),
    Access("An artifact's link (API)", "api", "GET", "/api/artifacts/{artifact}/", VIEW_DOSSIERS),
    Access("Create a contact (API)", "api", "POST", "/api/contacts/", ADD_CONTACTS),
]


def allowed(role: str | None, perm: str) -> bool:
    """What the table says: ``role`` None is a staff user without any group."""
    return role is not None and perm in ROLES[role]


def markdown_table() -> str:
    """The role-by-access table of docs/privacy.md (a test checks the doc holds it)."""
    roles = list(ROLES)
    lines = [
        "| what | kind | permission | " + " | ".join(roles) + " | staff, no group |",
        "| --- | --- | --- | " + " | ".join("---" for _ in roles) + " | --- |",
    ]
    for row in ACCESS:
        cells = ["yes" if allowed(r, row.perm) else "—" for r in roles]
        lines.append(f"| {row.what} | {row.kind} | `{row.perm}` | " + " | ".join(cells) + " | — |")
    return "\n".join(lines)


# --- Enforcement ------------------------------------------------------------------------------


def refuse(request: HttpRequest, perm: str) -> PermissionDenied:
    """The 403 of a console view; the audit row is written by the AuditRefusals middleware,
    which reads the permission from the request."""
    request.refused_permission = perm  # type: ignore[attr-defined]
    return PermissionDenied(f"This needs the permission {perm}.")


def require(get: str, post: str | None = None) -> Callable:
    """A console view that needs ``get`` to read and ``post`` (default: ``get``) to act."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            perms = [get, post] if request.method == "POST" and post else [get]
            for perm in perms:
                if not request.user.has_perm(perm):
                    raise refuse(request, perm)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
