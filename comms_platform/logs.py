"""Structured logs: structlog renders every line (ours, Django's, Celery's) as JSON or console.

Every line carries the fixed taxonomy — ``event``, ``task_id``, ``correlation_id``,
``channel``, ``agent``, ``provider``, ``status`` (null when unknown) — taken from context
variables that the request middleware (django-structlog's), the Celery task signals and the
webhook base view bind. Before rendering, ``scrub`` drops secret-looking keys, replaces any configured secret
value with ``[secret]`` and masks phone numbers and email addresses.
"""

from __future__ import annotations

import os
import re
import time
from functools import lru_cache
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, get_contextvars, reset_contextvars

TAXONOMY = ("event", "task_id", "correlation_id", "channel", "agent", "provider", "status")
SECRET_KEY_NAMES = re.compile(
    r"(secret|password|passwd|token|api_?key|authorization|signature|credential)", re.I
)
# Identifiers and bookkeeping fields: never personal data, and masking could mangle them.
UNMASKED = {"task_id", "timestamp", "level", "logger", "request_id", "celery_id", "artifact_id", "contact_id"}
MIN_SECRET_LENGTH = 6
QUIET_LOGGERS = ("twilio", "urllib3", "httpx", "httpcore", "openai", "anymail")

# Settings that hold secrets (and the schema's x-secret variables, read from the environment).
SECRET_SETTINGS = (
    "SECRET_KEY", "TWILIO_AUTH_TOKEN", "TWILIO_PREVIOUS_AUTH_TOKENS", "SENDGRID_API_KEY", "EMAIL_HOST_PASSWORD",
    "OPENAI_API_KEY", "REMOTE_AGENT_SECRETS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
)  # fmt: skip


@lru_cache(maxsize=1)
def _environment_secrets() -> frozenset[str]:
    from comms_platform import config

    names = [name for name, prop in config.load_schema()["properties"].items() if prop.get("x-secret")]
    values = set()
    for name in names:
        raw = os.environ.get(name, "")
        values.update(v for v in [raw, *raw.split(",")] if v)
        if "://" in raw:  # a URL's password (DATABASE_URL, REDIS_URL)
            match = re.match(r"^[a-z0-9+]+://[^:/@]*:([^@]+)@", raw)
            if match:
                values.add(match.group(1))
    return frozenset(v for v in values if len(v) >= MIN_SECRET_LENGTH)


def secret_values() -> list[str]:
    """Every configured secret value, longest first (so a secret containing another goes whole)."""
    from django.conf import settings

    values = set(_environment_secrets())
    if settings.configured:
        for name in SECRET_SETTINGS:
            value = getattr(settings, name, "")
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, str) and len(item) >= MIN_SECRET_LENGTH:
                    values.add(item)
    return sorted(values, key=len, reverse=True)


# API keys are not settings (only their digests are stored), so they are masked by shape:
# ``orchestrator.api.auth.KEY_PREFIX`` followed by token_urlsafe(32).
API_KEY_PATTERN = re.compile(r"\bcp_[A-Za-z0-9_-]{20,}")


# Query strings carry what people type and what APIs are asked (``?search=%2B1415…``,
# ``?To=…``), and signed links carry tokens: a logged URL keeps its path only.
URL_QUERY = re.compile(
    r"""((?:https?|wss?)://[^\s?#"'<>]+|\b(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|WebSocket) /[^\s?#"']*)\?[^\s"'<>]*"""
)
ARTIFACT_TOKEN = re.compile(r"/a/[A-Za-z0-9_:.-]{20,}/")
# Percent-encoded numbers and addresses (form bodies, URLs) that the plain-text maskers miss.
ENCODED_PHONE = re.compile(r"%2[Bb]\d{6,15}(?!\d)")
ENCODED_EMAIL = re.compile(r"[\w.+%-]+%40[\w-]+(?:\.[\w-]+)+")


def mask_urls(text: str) -> str:
    """Drop query strings from URLs and request lines; hide signed artifact tokens."""
    if "?" in text:
        text = URL_QUERY.sub(r"\1?[query]", text)
    if "/a/" in text:
        text = ARTIFACT_TOKEN.sub("/a/[token]/", text)
    return text


def _scrub_text(text: str, secrets: list[str]) -> str:
    from dossiers.redaction import mask_for_logs

    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[secret]")
    if "cp_" in text:
        text = API_KEY_PATTERN.sub("cp_[secret]", text)
    text = mask_urls(text)
    if "%40" in text:
        text = ENCODED_EMAIL.sub("[email]", text)
    if "%2B" in text or "%2b" in text:
        text = ENCODED_PHONE.sub("[phone]", text)
    return mask_for_logs(text)


def _scrub_value(value: Any, secrets: list[str], depth: int = 0) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if depth > 4:
        return value
    if isinstance(value, dict):
        return {
            k: _scrub_value(v, secrets, depth + 1)
            for k, v in value.items()
            if not (isinstance(k, str) and SECRET_KEY_NAMES.search(k))
        }
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v, secrets, depth + 1) for v in value]
    return value


def scrub(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop secret-looking keys; mask secret values, phone numbers and emails everywhere else."""
    secrets = secret_values()
    for key in list(event_dict):
        if SECRET_KEY_NAMES.search(key):
            del event_dict[key]
        elif key not in UNMASKED and key != "exc_info":
            event_dict[key] = _scrub_value(event_dict[key], secrets)
    return event_dict


def scrub_rendered(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Tracebacks are rendered late (after ``scrub``): clean them too."""
    if isinstance(event_dict.get("exception"), str):
        event_dict["exception"] = _scrub_text(event_dict["exception"], secret_values())
    return event_dict


def add_taxonomy(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in TAXONOMY:
        event_dict.setdefault(key, None)
    return event_dict


def _pre_chain() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        name_request_events,
        scrub,
        add_taxonomy,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def logging_config(*, level: str, fmt: str) -> dict[str, Any]:
    """The LOGGING dict: one handler whose formatter is structlog's, for every logger."""
    renderer = (
        structlog.processors.JSONRenderer(default=str)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": _pre_chain(),
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    scrub_rendered,
                    renderer,
                ],
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # The Twilio SDK logs every request's URL, parameters (recipients, bodies) and
            # headers at INFO; HTTP client libraries log URLs with their query strings.
            **{name: {"level": "WARNING"} for name in QUIET_LOGGERS},
            # uvicorn's own lines ("WebSocket /ws/…?…" [accepted]) go through the same
            # scrubbing handler instead of uvicorn's plain one.
            "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }


def configure_structlog() -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_pre_chain(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


# --- Carrying the context -----------------------------------------------------------------

task_log = structlog.get_logger("comms_platform.tasks")


# Requests are logged by django-structlog's RequestMiddleware (first middleware): it binds
# ``request_id`` (the caller's X-Request-Id, else a new one), ``correlation_id`` (the caller's
# X-Correlation-Id) and ``user_id`` for every line logged while the request runs; its client
# IP logging is off (personal data). Its receivers below put our fields on its lines, and
# ``name_request_events`` gives them our event names.
_QUIET_PREFIXES = ("/static/", "/favicon.ico")
_REQUEST_EVENTS = {"request_finished": "http.request", "request_failed": "http.request.failed"}
_BOUNDS = {"request_id": 64, "correlation_id": 128}  # caller-chosen values: kept short


def _request_started(sender: Any, request: Any, log_kwargs: dict[str, Any], **kwargs) -> None:
    request._comms_log_started = time.monotonic()


def _request_fields(request: Any, log_kwargs: dict[str, Any], status: int) -> None:
    """Method and path apart (never the query string, which carries what people typed)."""
    started = getattr(request, "_comms_log_started", None)
    log_kwargs.pop("request", None)
    log_kwargs.pop("code", None)
    log_kwargs.update(method=request.method, path=request.path, http_status=status)
    if started is not None:
        log_kwargs["duration_ms"] = round((time.monotonic() - started) * 1000, 2)


def _request_finished(sender: Any, request: Any, response: Any, log_kwargs: dict[str, Any], **kwargs) -> None:
    _request_fields(request, log_kwargs, response.status_code)
    request_id = get_contextvars().get("request_id")
    if request_id:
        response["X-Request-Id"] = str(request_id)[: _BOUNDS["request_id"]]


def _request_failed(sender: Any, request: Any, log_kwargs: dict[str, Any], **kwargs) -> None:
    _request_fields(request, log_kwargs, 500)


def name_request_events(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """django-structlog's request lines under our names; none for a page's assets."""
    for key, bound in _BOUNDS.items():
        if isinstance(event_dict.get(key), str):
            event_dict[key] = event_dict[key][:bound]
    name = _REQUEST_EVENTS.get(event_dict.get("event"))
    if name is not None:
        if str(event_dict.get("path", "")).startswith(_QUIET_PREFIXES):
            raise structlog.DropEvent
        event_dict["event"] = name
    return event_dict


def connect_request_signals() -> None:
    from django_structlog import signals

    signals.bind_extra_request_metadata.connect(_request_started, dispatch_uid="comms-logs-request-started")
    signals.bind_extra_request_finished_metadata.connect(_request_finished, dispatch_uid="comms-logs-request")
    signals.bind_extra_request_failed_metadata.connect(
        _request_failed, dispatch_uid="comms-logs-request-failed"
    )


_task_tokens: dict[str, Any] = {}


# Celery context stays ours, not django-structlog's Celery receivers
# (DJANGO_STRUCTLOG_CELERY_ENABLED): they bind ``task_id`` to the Celery message id (the
# taxonomy's ``task_id`` is the orchestrator task) and clear the context in task_prerun, which
# would wipe a request's context when tasks run in process (the embedded default).
def on_task_prerun(task_id: str | None = None, task: Any = None, args: Any = None, **kwargs) -> None:
    """Bind what the Celery message says: its name, id and the orchestrator task's id (the first
    argument). The task's type, channel, correlation id and agent come from the row the claim
    reads anyway (``bind_task``): no query of its own here, on every task a worker runs."""
    name = getattr(task, "name", None)
    fields: dict[str, Any] = {"celery_task": name, "celery_id": task_id}
    if name == "orchestrator.execute_task" and args:
        # The row's fields are bound here as unknown, so the postrun reset drops what
        # ``bind_task`` adds: the next message of this worker starts clean.
        fields.update(task_id=str(args[0]), task_type=None, channel=None, correlation_id=None, status=None,
                      agent=None)  # fmt: skip
    _task_tokens[task_id] = bind_contextvars(**fields)
    if name != "orchestrator.execute_task":  # execute_task says it once its task is claimed
        task_log.info("task.started")


def bind_task(task: Any, *, agent: str | None) -> None:
    """Add the claimed task's fields to the log context and say ``task.started``; called by the
    orchestrator's ``execute_task`` right after the claim (the Celery signal's tokens reset them)."""
    bind_contextvars(task_id=str(task.id), task_type=task.type, channel=task.channel,
                     correlation_id=task.correlation_id or None, status=task.status, agent=agent)  # fmt: skip
    task_log.info("task.started")


def on_task_postrun(
    task_id: str | None = None, retval: Any = None, state: str | None = None, **kwargs
) -> None:
    task_log.info("task.finished", status=retval if isinstance(retval, str) else state)
    tokens = _task_tokens.pop(task_id, None)
    if tokens:
        reset_contextvars(**tokens)


def connect_celery_signals() -> None:
    from celery.signals import task_postrun, task_prerun

    task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="comms-logs-prerun")
    task_postrun.connect(on_task_postrun, weak=False, dispatch_uid="comms-logs-postrun")
