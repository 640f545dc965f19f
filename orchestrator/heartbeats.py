"""Agent heartbeats: every worker vouches for the agents whose queues it consumes.

A thread started on ``worker_ready`` writes ``comms:heartbeat:<agent>`` (a Unix time, with
a TTL) to Redis every HEARTBEAT_INTERVAL_SECONDS and copies it to
``AgentRegistration.last_heartbeat_at``. An agent whose last heartbeat is older than
HEARTBEAT_STALE_SECONDS is unhealthy: ``orchestrator.services.task_dispatch`` leaves its
tasks pending (the sweeper sends them once a worker is back). An agent never heard from
(no key in Redis, no ``last_heartbeat_at``) is "unknown" and still gets work, so a fresh
deployment can queue tasks before its workers are up. In the embedded default (no Redis,
tasks run in process) there is no worker to be silent, so every agent is healthy.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from django.conf import settings
from django.db import close_old_connections, connection

log = structlog.get_logger(__name__)
KEY = "comms:heartbeat:{agent}"
# Set by a worker that cannot reach the database: its agents are unhealthy at once, with the
# reason, instead of looking alive while every task they take would fail.
ERROR_KEY = "comms:heartbeat-error:{agent}"
# kombu's Redis transport keeps priority levels in extra lists named queue + sep + level.
PRIORITY_SUFFIXES = ["", "\x06\x163", "\x06\x166", "\x06\x169"]
HEALTH_CACHE_SECONDS = 1.0

_client = None
_client_lock = threading.Lock()


def redis_client():
    global _client
    with _client_lock:
        if _client is None:
            import redis

            _client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        return _client


def embedded() -> bool:
    from comms_platform.celery import app

    return not settings.REDIS_URL or bool(app.conf.task_always_eager)


# --- Publishing (worker side) ---------------------------------------------------------------


def agents_for_queues(queues: list[str]) -> list[str]:
    from orchestrator.models import AgentRegistration

    rows = AgentRegistration.objects.filter(queue__in=queues, enabled=True).values_list("agent", flat=True)
    return sorted(set(rows))


def heartbeat_publish(*, queues: list[str], now: float | None = None) -> list[str]:
    """One beat for every agent served by ``queues``; returns the agents."""
    from orchestrator.models import AgentRegistration

    now = now or time.time()
    agents = agents_for_queues(queues)
    if not agents:
        return agents
    pipe = redis_client().pipeline()
    for agent in agents:
        pipe.set(KEY.format(agent=agent), repr(now), ex=settings.HEARTBEAT_STALE_SECONDS * 4)
    pipe.execute()
    AgentRegistration.objects.filter(agent__in=agents).update(
        last_heartbeat_at=datetime.fromtimestamp(now, UTC)
    )
    return agents


def heartbeat_report_error(*, agents: list[str], reason: str) -> None:
    """The worker serving ``agents`` cannot do their work (its database is unreachable)."""
    if not agents:
        return
    pipe = redis_client().pipeline()
    for agent in agents:
        pipe.set(
            ERROR_KEY.format(agent=agent), reason[:200], ex=max(settings.HEARTBEAT_INTERVAL_SECONDS * 3, 5)
        )
    pipe.execute()


def heartbeat_errors(agents: list[str]) -> dict[str, str]:
    """What a worker reported wrong with each agent just now (only agents with a report)."""
    if not agents:
        return {}
    values = redis_client().mget([ERROR_KEY.format(agent=a) for a in agents])
    return {a: v.decode() for a, v in zip(agents, values, strict=True) if v}


class HeartbeatThread(threading.Thread):
    def __init__(self, queues: list[str]) -> None:
        super().__init__(name="agent-heartbeat", daemon=True)
        self.queues = queues
        self.stopped = threading.Event()
        self.agents: list[str] = []  # the last known, for reporting while the database is away

    def run(self) -> None:
        from comms_platform.dbhealth import is_database_error, replace_broken_connections

        announced = False
        while not self.stopped.is_set():
            try:
                close_old_connections()
                replace_broken_connections()
                self.agents = heartbeat_publish(queues=self.queues) or self.agents
                if self.agents:
                    redis_client().delete(*[ERROR_KEY.format(agent=a) for a in self.agents])
                if not announced:  # the console's health page shows these agents up at once
                    _announce(self.agents, "healthy")
                    announced = True
            except Exception as exc:  # Redis or the database away: try again next beat
                log.warning("heartbeat.failed", status="error", error=type(exc).__name__)
                if is_database_error(exc):
                    replace_broken_connections()
                    with contextlib.suppress(Exception):
                        heartbeat_report_error(
                            agents=self.agents, reason=f"database unreachable: {type(exc).__name__}"
                        )
            self.stopped.wait(settings.HEARTBEAT_INTERVAL_SECONDS)
        connection.close()

    agents: list[str] = []


def _announce(agents: list[str], state: str) -> None:
    from orchestrator.live import publish_health_update

    for agent in agents:
        publish_health_update(agent=agent, state=state)


_thread: HeartbeatThread | None = None


def on_worker_ready(sender: Any = None, **kwargs) -> None:
    global _thread
    if not settings.REDIS_URL:
        return
    consume = getattr(getattr(sender.app.amqp, "queues", None), "consume_from", None) or {}
    queues = sorted(consume) or list(settings.AGENT_QUEUES)
    _thread = HeartbeatThread(queues)
    _thread.start()
    log.info("heartbeat.started", queues=queues, interval=settings.HEARTBEAT_INTERVAL_SECONDS)


def on_worker_shutdown(**kwargs) -> None:
    if _thread is not None:
        _thread.stopped.set()
        with contextlib.suppress(Exception):  # other workers may still serve these agents
            _announce(_thread.agents, "stopping")


def connect_worker_signals() -> None:
    from celery.signals import worker_ready, worker_shutdown

    worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="comms-heartbeat-start")
    worker_shutdown.connect(on_worker_shutdown, weak=False, dispatch_uid="comms-heartbeat-stop")


# --- Reading (orchestrator and API side) ----------------------------------------------------

_health_cache: dict[str, tuple[float, bool]] = {}


def last_heartbeats(agents: list[str]) -> dict[str, float | None]:
    """The last beat of each agent: from Redis, else (its key expired) from the registry."""
    from django.db.models import Max

    from orchestrator.models import AgentRegistration

    values = redis_client().mget([KEY.format(agent=a) for a in agents]) if agents else []
    beats = {a: float(v) if v else None for a, v in zip(agents, values, strict=True)}
    missing = [a for a, beat in beats.items() if beat is None]
    if missing:
        rows = (
            AgentRegistration.objects.filter(agent__in=missing, last_heartbeat_at__isnull=False)
            .values("agent")
            .annotate(last=Max("last_heartbeat_at"))
        )
        beats.update({r["agent"]: r["last"].timestamp() for r in rows})
    return beats


def health(beat: float | None, now: float | None = None, error: str | None = None) -> str:
    if error:
        return "unhealthy"
    if beat is None:
        return "unknown"
    fresh = (now or time.time()) - beat <= settings.HEARTBEAT_STALE_SECONDS
    return "healthy" if fresh else "unhealthy"


def agent_healthy(*, agent: str) -> bool:
    """May the orchestrator send this agent new work? Cached for a second per process.

    Fails open when Redis cannot be read: Redis is the broker too, so dispatch then fails
    anyway and the task stays pending; refusing here would only hide the real error.
    """
    if embedded():
        return True
    cached = _health_cache.get(agent)
    now = time.monotonic()
    if cached and now - cached[0] < HEALTH_CACHE_SECONDS:
        return cached[1]
    try:
        # Only the beat's age counts here: a worker whose database is away still takes the
        # message and tries it again once the database is back (the error key is a report).
        healthy = health(last_heartbeats([agent])[agent]) != "unhealthy"
    except Exception:
        return True
    _health_cache[agent] = (now, healthy)
    return healthy


def queue_depths(queues: list[str]) -> dict[str, int]:
    if embedded() or not queues:
        return dict.fromkeys(queues, 0)
    pipe = redis_client().pipeline()
    for queue in queues:
        for suffix in PRIORITY_SUFFIXES:
            pipe.llen(queue + suffix)
    counts = pipe.execute()
    n = len(PRIORITY_SUFFIXES)
    return {q: sum(counts[i * n : (i + 1) * n]) for i, q in enumerate(queues)}


@dataclass
class AgentStatus:
    agent: str
    task_types: list[str]
    queues: list[str]
    kinds: list[str]
    enabled: bool
    health: str
    healthy: bool
    last_heartbeat_at: datetime | None
    queue_depth: int | None
    error: str = ""


def agent_statuses() -> list[AgentStatus]:
    """Every registered agent with its health, the depth of its queues and its last beat."""
    from orchestrator.models import AgentRegistration

    rows = list(AgentRegistration.objects.order_by("agent", "task_type"))
    grouped: dict[str, list[AgentRegistration]] = {}
    for row in rows:
        grouped.setdefault(row.agent, []).append(row)
    queues = sorted({r.queue for r in rows})
    # Redis away: the registry's data still answers (last beats from the table, no depths).
    redis_error = ""
    try:
        depths: dict[str, int] = queue_depths(queues)
        beats = {} if embedded() else last_heartbeats(list(grouped))
        errors = {} if embedded() else heartbeat_errors(list(grouped))
    except Exception as exc:
        redis_error = f"redis unavailable: {type(exc).__name__}"
        depths, beats, errors = {}, {}, {}
    statuses = []
    for agent, regs in grouped.items():
        db_beat = max((r.last_heartbeat_at for r in regs if r.last_heartbeat_at), default=None)
        beat = beats.get(agent) or (db_beat.timestamp() if db_beat and redis_error else None)
        state = "healthy" if embedded() else health(beat, error=errors.get(agent))
        agent_queues = sorted({r.queue for r in regs})
        statuses.append(
            AgentStatus(
                agent=agent, task_types=[r.task_type for r in regs], queues=agent_queues,
                kinds=sorted({r.kind for r in regs}), enabled=any(r.enabled for r in regs),
                health=state, healthy=state != "unhealthy",
                last_heartbeat_at=datetime.fromtimestamp(beat, UTC) if beat else db_beat,
                queue_depth=None if redis_error else sum(depths[q] for q in agent_queues),
                error=errors.get(agent) or redis_error,
            )
        )  # fmt: skip
    return statuses
