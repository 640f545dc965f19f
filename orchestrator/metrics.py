"""Prometheus metrics (exposed at /metrics by ``comms_platform.metrics_view``).

Counted where things happen, in whichever process they happen:

* ``comms_tasks_total{type,channel,status}`` — tasks entering a status: ``pending`` when
  created, then every applied transition (``orchestrator.services``);
* ``comms_provider_request_seconds{provider,operation}`` (histogram) and
  ``comms_provider_errors_total{provider,operation,code}`` — agents wrap each provider call
  in ``observe_provider_call(provider, operation)``; with Redis they are kept there, so the
  calls Celery workers make show on the web service's /metrics;
* ``comms_webhooks_total{provider,kind,result}`` — ``accepted``, ``refused`` (bad or
  missing signature) or ``bad_request`` (signed but unreadable), from the webhook base view.

Read at scrape time from shared state, so every web instance reports the same values
whatever process did the work (``ScrapeCollector``): queue depth per agent queue (Redis
``LLEN``), heartbeat age per agent (``AgentRegistration.last_heartbeat_at``), open tasks by
type and status, and tasks finished in the last 15 minutes (PostgreSQL).

Under gunicorn with several workers set ``PROMETHEUS_MULTIPROC_DIR`` (bin/render-web does):
prometheus_client then keeps each process's counters in files there and /metrics adds
them up (docs/monitoring.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

log = logging.getLogger(__name__)

WEBHOOKS = Counter(
    "comms_webhooks_total",
    "Webhook requests by provider, kind and verification result",
    ["provider", "kind", "result"],
)
TASKS = Counter(
    "comms_tasks_total",
    "Tasks entering a status (pending = created), by task type, channel and status",
    ["type", "channel", "status"],
)
# Provider calls happen mostly in Celery workers, which Render does not let Prometheus reach.
# With Redis they are therefore counted in Redis (one pipelined write per call, next to a
# request that takes 100 ms or more) and /metrics reads them back; without Redis (one process)
# these in-process objects hold them. They are not in the default registry: ScrapeCollector
# yields whichever source is in use, so the series never appear twice.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_HELP = "Duration of requests to providers (Twilio, SendGrid, SMTP, OpenAI), successful or not"
ERRORS_HELP = "Provider requests that failed, by provider, operation and error code"
PROVIDER_LATENCY = Histogram(
    "comms_provider_request_seconds",
    LATENCY_HELP,
    ["provider", "operation"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
PROVIDER_ERRORS = Counter(
    "comms_provider_errors_total", ERRORS_HELP, ["provider", "operation", "code"], registry=None
)
PROVIDER_HASH = "comms:metrics:provider"
_SEP = "\x1f"

# Window of comms_tasks_finished_recent: long enough to smooth, short enough to alert.
RECENT_WINDOW = timedelta(minutes=15)
# kombu's Redis transport keeps messages sent with a priority in lists named
# "<queue>\x06\x16<priority>"; the plain list holds the rest.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def webhook_refused(provider: str, kind: str) -> None:
    WEBHOOKS.labels(provider, kind, "refused").inc()


def webhook_accepted(provider: str, kind: str) -> None:
    WEBHOOKS.labels(provider, kind, "accepted").inc()


def webhook_bad_request(provider: str, kind: str) -> None:
    WEBHOOKS.labels(provider, kind, "bad_request").inc()


def task_entered(task_type: str, channel: str, status: str) -> None:
    TASKS.labels(task_type, channel or "", status).inc()


class ProviderCall:
    """What ``observe_provider_call`` yields: set ``code`` when the answer is an error."""

    code: str | None = None

    def failed(self, code: str | int) -> None:
        self.code = str(code)


@contextlib.contextmanager
def observe_provider_call(provider: str, operation: str) -> Iterator[ProviderCall]:
    """Time one provider request and count it as an error when it raises or ``call.failed(code)``.

    ``with observe_provider_call("twilio", "messages.create") as call: ...`` — an exception's
    ``code`` (AgentError), ``status`` (Twilio's TwilioRestException) or ``status_code`` becomes
    the error code, else its class name. The exception propagates unchanged.
    """
    call = ProviderCall()
    started = time.perf_counter()
    try:
        yield call
    except BaseException as exc:
        call.code = call.code or _error_code(exc)
        raise
    finally:
        record_provider_call(provider, operation, time.perf_counter() - started, call.code)


def record_provider_call(provider: str, operation: str, seconds: float, code: str | None) -> None:
    from django.conf import settings

    if not settings.REDIS_URL:
        PROVIDER_LATENCY.labels(provider, operation).observe(seconds)
        if code is not None:
            PROVIDER_ERRORS.labels(provider, operation, code).inc()
        return
    prefix = f"{provider}{_SEP}{operation}{_SEP}"
    try:
        with _redis(settings.REDIS_URL).pipeline(transaction=False) as pipe:
            pipe.hincrby(PROVIDER_HASH, prefix + "count", 1)
            pipe.hincrbyfloat(PROVIDER_HASH, prefix + "sum", seconds)
            # Only the one bucket the call falls in (the scrape adds them up into Prometheus's
            # cumulative "le" buckets): three or four commands per call instead of up to twelve.
            bound = next((b for b in LATENCY_BUCKETS if seconds <= b), None)
            if bound is not None:
                pipe.hincrby(PROVIDER_HASH, f"{prefix}in{_SEP}{bound}", 1)
            if code is not None:
                pipe.hincrby(PROVIDER_HASH, f"{prefix}error{_SEP}{code}", 1)
            pipe.execute()
    except Exception as exc:  # metrics must never break a send
        log.warning("metrics: provider call not recorded (%s)", type(exc).__name__)


@functools.cache
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def _error_code(exc: BaseException) -> str:
    for attribute in ("code", "status", "status_code"):
        value = getattr(exc, attribute, None)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return type(exc).__name__


# --- Read at scrape time ----------------------------------------------------------------


def queue_depths(redis_url: str, queues: list[str]) -> dict[str, int]:
    """Messages waiting per Celery queue; 0 for each when there is no Redis (in-process mode)."""
    if not redis_url:
        return dict.fromkeys(queues, 0)
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
                for step in _PRIORITY_STEPS:
                    pipe.llen(f"{queue}{_PRIORITY_SEP}{step}")
            lengths = pipe.execute()
    finally:
        client.close()
    per_queue = 1 + len(_PRIORITY_STEPS)
    return {q: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, q in enumerate(queues)}


class ScrapeCollector:
    """Gauges computed from Redis and PostgreSQL on each scrape (cheap, indexed queries)."""

    def describe(self):
        # Nothing to describe up front: registering must not query the database.
        return []

    def collect(self):
        for build in (self._providers, self._queues, self._worker_errors, self._heartbeats, self._open_tasks,
                      self._recent_tasks):  # fmt: skip
            try:
                yield from build()
            except Exception as exc:  # a scrape must still answer when one source is down
                log.warning("metrics: %s unavailable (%s)", build.__name__.strip("_"), type(exc).__name__)

    def _providers(self):
        from django.conf import settings

        if not settings.REDIS_URL:
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # else the multiprocess files hold them
                yield from PROVIDER_LATENCY.collect()
                yield from PROVIDER_ERRORS.collect()
            return
        fields = {
            k.decode(): v.decode() for k, v in _redis(settings.REDIS_URL).hgetall(PROVIDER_HASH).items()
        }
        latency = HistogramMetricFamily(
            "comms_provider_request_seconds", LATENCY_HELP, labels=["provider", "operation"]
        )
        errors = CounterMetricFamily(
            "comms_provider_errors_total", ERRORS_HELP, labels=["provider", "operation", "code"]
        )
        for field, count in sorted(fields.items()):
            provider, operation, kind, *rest = field.split(_SEP)
            if kind == "count":
                prefix = f"{provider}{_SEP}{operation}{_SEP}"
                buckets, below = [], 0.0
                for b in LATENCY_BUCKETS:
                    below += float(fields.get(f"{prefix}in{_SEP}{b}", 0))
                    # "le" fields: cumulative counts written before the single-bucket fields.
                    buckets.append((str(b), below + float(fields.get(f"{prefix}le{_SEP}{b}", 0))))
                buckets.append(("+Inf", float(count)))
                latency.add_metric([provider, operation], buckets, float(fields.get(prefix + "sum", 0)))
            elif kind == "error":
                errors.add_metric([provider, operation, rest[0]], float(count))
        yield latency
        yield errors

    def _queues(self):
        from django.conf import settings

        gauge = GaugeMetricFamily(
            "comms_queue_depth", "Messages waiting in each agent queue", labels=["queue"]
        )
        for queue, depth in queue_depths(settings.REDIS_URL, list(settings.AGENT_QUEUES)).items():
            gauge.add_metric([queue], depth)
        yield gauge

    def _worker_errors(self):
        """From Redis alone, so it is served while the database is the thing that is down."""
        from django.conf import settings

        from orchestrator.heartbeats import ERROR_KEY, KEY, redis_client

        if not settings.REDIS_URL:
            return
        client = redis_client()
        prefix, error_prefix = KEY.format(agent=""), ERROR_KEY.format(agent="")
        agents = {k.decode()[len(prefix) :] for k in client.scan_iter(match=prefix + "*", count=200)}
        errors = {
            k.decode()[len(error_prefix) :] for k in client.scan_iter(match=error_prefix + "*", count=200)
        }
        gauge = GaugeMetricFamily(
            "comms_agent_worker_error",
            "1 while a worker serving the agent reports it cannot work (its database is unreachable)",
            labels=["agent"],
        )
        for agent in sorted(agents | errors):
            gauge.add_metric([agent], 1 if agent in errors else 0)
        yield gauge

    def _heartbeats(self):
        from django.db.models import Max
        from django.utils import timezone

        from orchestrator.models import AgentRegistration

        age = GaugeMetricFamily(
            "comms_agent_heartbeat_age_seconds",
            "Seconds since the agent's last heartbeat (+Inf when it never sent one); enabled agents only",
            labels=["agent"],
        )
        now = timezone.now()
        rows = (
            AgentRegistration.objects.filter(enabled=True)
            .values("agent")
            .annotate(last=Max("last_heartbeat_at"))
        )
        for row in rows.order_by("agent"):
            last = row["last"]
            age.add_metric([row["agent"]], (now - last).total_seconds() if last else float("inf"))
        yield age
        enabled = GaugeMetricFamily(
            "comms_agent_enabled", "1 when the task type's registration is enabled", labels=["type", "agent"]
        )
        for task_type, agent, on in AgentRegistration.objects.values_list("task_type", "agent", "enabled"):
            enabled.add_metric([task_type, agent], 1 if on else 0)
        yield enabled

    def _open_tasks(self):
        from django.db.models import Count

        from orchestrator.models import Task
        from orchestrator.states import FINAL

        gauge = GaugeMetricFamily(
            "comms_tasks_open", "Tasks not yet final, by type and status", labels=["type", "status"]
        )
        rows = (
            Task.objects.exclude(status__in=FINAL)
            .exclude(contact__synthetic=True)  # smoke runs are not traffic
            .values("type", "status")
            .annotate(n=Count("id"))
        )
        for row in rows.order_by("type", "status"):
            gauge.add_metric([row["type"], row["status"]], row["n"])
        yield gauge

    def _recent_tasks(self):
        from django.db.models import Count
        from django.utils import timezone

        from orchestrator.models import Task
        from orchestrator.states import FINAL

        gauge = GaugeMetricFamily(
            "comms_tasks_finished_recent",
            f"Tasks that reached a final status in the last {int(RECENT_WINDOW.total_seconds() // 60)} minutes",
            labels=["type", "channel", "status"],
        )
        # (status, updated_at) is indexed; a final task's updated_at is when it finished.
        since = timezone.now() - RECENT_WINDOW
        rows = (
            Task.objects.filter(status__in=FINAL, updated_at__gte=since)
            .exclude(contact__synthetic=True)  # smoke runs are not traffic
            .values("type", "channel", "status")
            .annotate(n=Count("id"))
        )
        for row in rows.order_by("type", "channel", "status"):
            gauge.add_metric([row["type"], row["channel"], row["status"]], row["n"])
        yield gauge
