"""The same Idempotency-Key posted from several threads at once yields exactly one task."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection, connections
from django.test import Client

from orchestrator.models import Task
from tests.support.services import transactional_db, unavailable

THREADS = 8


@transactional_db
@pytest.mark.services
def test_concurrent_posts_with_one_key_create_one_task(api_key):
    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL: SQLite serialises writers, so there is no race to test")
    barrier = threading.Barrier(THREADS)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()
    body = json.dumps({"type": "diagnostic.echo", "payload": {"order": 99}})

    def worker() -> None:
        try:
            client = Client(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
            barrier.wait()
            response = client.post("/api/tasks/", data=body, content_type="application/json",
                                   HTTP_IDEMPOTENCY_KEY="order-99")  # fmt: skip
            with lock:
                results.append((response.status_code, response.json().get("id", response.content.decode())))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    statuses = sorted(code for code, _ in results)
    assert len(results) == THREADS
    assert statuses == [200] * (THREADS - 1) + [201], results
    assert len({task_id for _, task_id in results}) == 1
    assert Task.objects.filter(idempotency_key="order-99").count() == 1
