"""Prometheus metrics shared by the agents (exposed at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOKS = Counter(
    "comms_webhooks_total",
    "Webhook requests by provider, kind and verification result",
    ["provider", "kind", "result"],
)


def webhook_refused(provider: str, kind: str) -> None:
    WEBHOOKS.labels(provider, kind, "refused").inc()


def webhook_accepted(provider: str, kind: str) -> None:
    WEBHOOKS.labels(provider, kind, "accepted").inc()
