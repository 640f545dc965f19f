"""The handler registry.

Two halves:
- Code registers a handler for a task type with ``@handler("sms.send", channel=…, queue=…)``.
  That says what the code *can* do; it seeds the registry rows and validates admin edits.
- ``AgentRegistration`` rows (a data migration seeds them; operators edit them in the admin)
  say what the platform *does*: which agent serves a type, in process or remote, on which
  queue, enabled or not. The orchestrator resolves every task through the rows and imports
  the handler by its dotted path, lazily.

Rows are cached per process for a few seconds (intake looks them up on every request);
saving a row through the admin or a service clears this process's cache at once.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.models import AgentRegistration, Task

Handler = Callable[["Task"], None]

REMOTE_HANDLER = "orchestrator.remote.deliver"
CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class HandlerSpec:
    task_type: str
    channel: str
    queue: str
    path: str
    internal: bool = False


_specs: dict[str, HandlerSpec] = {}


def handler(
    task_type: str, *, channel: str, queue: str, internal: bool = False
) -> Callable[[Handler], Handler]:
    """Register ``func`` as the in-process handler of ``task_type``.

    ``internal``: the platform creates these tasks itself (an inbound message, a hand-off);
    the API refuses them whatever a key's scopes say.
    """

    def register(func: Handler) -> Handler:
        path = f"{func.__module__}.{func.__qualname__}"
        _specs[task_type] = HandlerSpec(task_type, channel, queue, path, internal)
        return func

    return register


def is_internal(task_type: str) -> bool:
    spec = _specs.get(task_type)
    return bool(spec and spec.internal)


def registered_handlers() -> dict[str, HandlerSpec]:
    return dict(_specs)


# Operator actions an agent performs for a task it runs, e.g. ``hang_up`` for a call: the
# console asks through here and never imports an agent. An action raises on failure (the
# provider refused or is unreachable) with a message an operator can read.
TaskAction = Callable[["Task", str], str]  # (task, actor) -> what happened, in a word
_actions: dict[tuple[str, str], TaskAction] = {}


class NoSuchAction(LookupError):
    """No agent registered this action for this task type."""


def task_action(task_type: str, name: str) -> Callable[[TaskAction], TaskAction]:
    """Register ``func(task, actor)`` as the ``name`` action of ``task_type`` tasks."""

    def register(func: TaskAction) -> TaskAction:
        _actions[(task_type, name)] = func
        return func

    return register


# Status checks: for a task type whose final state comes from a provider's callback, the agent
# registers how to ask the provider directly. The sweeper queues it for a task still
# ``in_progress`` past its channel's STATUS_CHECK_AGE_SECONDS (a lost final callback). The
# check receives the task id; it finishes the task with what the provider says, or fails it.
StatusCheck = Callable[[Any], str]
_status_checks: dict[str, str] = {}


def status_check(*task_types: str) -> Callable[[StatusCheck], StatusCheck]:
    def register(func: StatusCheck) -> StatusCheck:
        for task_type in task_types:
            _status_checks[task_type] = f"{func.__module__}.{func.__qualname__}"
        return func

    return register


# Hooks: a named function another app offers to the agents, so an agent can ask for it without
# importing that app (the conversations app offers ``call.handoff.route`` / ``.finish`` / ``.no_answer``).
_hooks: dict[str, Callable[..., Any]] = {}


def hook(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        _hooks[name] = func
        return func

    return register


def call_hook(name: str, **kwargs: Any) -> Any:
    """The hook's answer, or None when no app offers it."""
    func = _hooks.get(name)
    return func(**kwargs) if func is not None else None


def run_task_action(task: Task, name: str, *, actor: str) -> str:
    """Run the ``name`` action on ``task`` and return its outcome; NoSuchAction when no agent offers it."""
    action = _actions.get((task.type, name))
    if action is None:
        raise NoSuchAction(f"no agent offers {name!r} for {task.type} tasks")
    return action(task, actor)


def status_checks() -> dict[str, str]:
    """Task type → dotted path of its status check."""
    return dict(_status_checks)


# Reply templates: an agent offers the templates an operator may send on its channel (WhatsApp's
# approved templates, needed outside the 24-hour window). The console asks through here and
# never imports an agent. A source returns ``[{"name", "content_sid", "variables", "preview"}]``.
TemplateSource = Callable[[], "list[dict[str, Any]]"]
_template_sources: dict[str, list[TemplateSource]] = {}


def reply_templates(channel: str) -> Callable[[TemplateSource], TemplateSource]:
    """Register ``func()`` as a source of reply templates for ``channel``."""

    def register(func: TemplateSource) -> TemplateSource:
        sources = _template_sources.setdefault(channel, [])
        if func not in sources:
            sources.append(func)
        return func

    return register


def templates_for(channel: str) -> list[dict[str, Any]]:
    """Every registered source's templates for ``channel``, the first of each name kept."""
    found: dict[str, dict[str, Any]] = {}
    for source in _template_sources.get(channel, []):
        for template in source():
            found.setdefault(template["name"], template)
    return list(found.values())


# Type-specific checks run at intake, so a bad payload is a 400 that says what is wrong
# instead of a task that fails later. A validator receives the payload and the contact (or
# None), raises rest_framework.serializers.ValidationError, and may return a normalised payload.
PayloadValidator = Callable[[dict, Any], "dict | None"]
_payload_validators: dict[str, PayloadValidator] = {}


def payload_validator(task_type: str) -> Callable[[PayloadValidator], PayloadValidator]:
    def register(func: PayloadValidator) -> PayloadValidator:
        _payload_validators[task_type] = func
        return func

    return register


@dataclass(frozen=True)
class PayloadSchema:
    """A task type's payload as a DRF serializer: its OpenAPI component (the ``TaskCreate``
    union of /api/docs/) and a check intake runs too (``validates``), with a documented example."""

    serializer: type
    example: dict
    validates: bool = True  # False when the type's payload validator already runs this serializer


_payload_schemas: dict[str, PayloadSchema] = {}


def payload_schema(task_type: str, serializer: type, *, example: dict, validates: bool = True) -> None:
    _payload_schemas[task_type] = PayloadSchema(serializer, example, validates)


def payload_schemas() -> dict[str, PayloadSchema]:
    return dict(sorted(_payload_schemas.items()))


def validate_payload(task_type: str, payload: dict, contact: Any) -> dict:
    validator = _payload_validators.get(task_type)
    if validator is None:
        return _check_shape(task_type, payload)
    result = validator(payload, contact)
    result = payload if result is None else result
    return _check_shape(task_type, result)


def _check_shape(task_type: str, payload: dict) -> dict:
    """The documented payload serializer accepts what intake accepts (after the type's own
    validator, whose messages come first): a payload it refuses is a 400 naming the field."""
    spec = _payload_schemas.get(task_type)
    if spec is None or not spec.validates:
        return payload
    serializer = spec.serializer(data=payload)
    if not serializer.is_valid():
        from rest_framework.exceptions import ValidationError

        raise ValidationError({"payload": serializer.errors})
    return payload


@dataclass(frozen=True)
class Route:
    """What the orchestrator needs from a registry row, detached from the ORM."""

    task_type: str
    agent: str
    channel: str
    kind: str
    queue: str
    handler: str
    url: str
    enabled: bool
    dispatch_only: bool


class _RouteCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, Route] | None = None
        self._loaded_at = 0.0

    def get_all(self) -> dict[str, Route]:
        routes = self._routes
        if routes is not None and time.monotonic() - self._loaded_at < CACHE_SECONDS:
            return routes
        with self._lock:
            from orchestrator.models import AgentRegistration

            self._routes = {r.task_type: _route(r) for r in AgentRegistration.objects.all()}
            self._loaded_at = time.monotonic()
            return self._routes

    def clear(self) -> None:
        with self._lock:
            self._routes = None


_cache = _RouteCache()


def _route(row: AgentRegistration) -> Route:
    handler_path = REMOTE_HANDLER if row.kind == "remote" else row.handler
    return Route(
        task_type=row.task_type,
        agent=row.agent,
        channel=row.channel,
        kind=row.kind,
        queue=row.queue,
        handler=handler_path,
        url=row.url,
        enabled=row.enabled,
        dispatch_only=row.dispatch_only,
    )


def get_route(task_type: str) -> Route | None:
    return _cache.get_all().get(task_type)


def known_task_types() -> list[str]:
    """Task types clients may submit: those with an enabled registration, not internal."""
    return sorted(t for t, r in _cache.get_all().items() if r.enabled and not is_internal(t))


def invalidate() -> None:
    _cache.clear()


_imported: dict[str, Handler] = {}


def load_handler(path: str) -> Handler:
    """Import ``package.module.function`` once and return the function."""
    func = _imported.get(path)
    if func is None:
        module_name, _, attr = path.rpartition(".")
        if not module_name:
            raise ImportError(f"handler path {path!r} is not a dotted path")
        func = getattr(importlib.import_module(module_name), attr)
        _imported[path] = func
    return func
