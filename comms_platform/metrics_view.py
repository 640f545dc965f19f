"""``GET /metrics``: Prometheus text format, optionally behind ``Authorization: Bearer METRICS_TOKEN``.

With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn with several workers, bin/render-web) the
counters of every process are read from that directory and added up; otherwise this
process's registry is served. The scrape-time gauges (queues, heartbeats, open tasks) are
added in both cases.
"""

from __future__ import annotations

import functools
import hmac
import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from orchestrator.metrics import ScrapeCollector


@functools.cache
def registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        target = CollectorRegistry()
        multiprocess.MultiProcessCollector(target)
    else:
        target = REGISTRY
    target.register(ScrapeCollector())
    return target


def _authorised(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _authorised(request):
        return JsonResponse(
            {
                "error": {
                    "code": "not_authenticated",
                    "message": "Send Authorization: Bearer <METRICS_TOKEN>.",
                }
            },
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
