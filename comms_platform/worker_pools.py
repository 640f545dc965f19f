"""Which Celery queues each worker pool consumes (no Django import: bin/devserver reads it too).

Voice, messaging and email each get their own pool, so a provider that hangs (a Twilio call
create that never answers, an SMTP server that stalls) holds only its own channel's pool
processes for up to the provider timeout; the other channels' tasks keep flowing. The core pool
runs the orchestrator's own tasks (the sweeper, routing, diagnostics), content, remote agents
and the outbound event webhooks (the ``webhooks`` queue).
render.yaml declares one Render worker service per pool (``WORKER_QUEUES`` for bin/render-worker);
``make run`` (bin/devserver) starts one Celery worker per pool.
"""

from __future__ import annotations

POOLS: dict[str, str] = {
    "core": "orchestrator,content,remote,webhooks",
    "voice": "voice",
    "messaging": "messaging",
    "email": "email",
}
