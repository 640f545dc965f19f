"""Loaded first (``-p tests.parallel_env`` in pyproject's addopts), before Django's settings:
a pytest-xdist worker process gets its own Redis database, REDIS_URL's number plus the worker's
index (modulo 16), as it gets its own test database from pytest-django (``_gw0``, ``_gw1``).
Outside xdist it changes nothing."""

from __future__ import annotations

import os


def redis_database(url: str, index: int) -> str:
    """The Redis URL with its database number moved on by ``index`` (modulo 16)."""
    head, _, tail = url.rpartition("/")
    if head.count("/") >= 2 and tail.isdigit():
        return f"{head}/{(int(tail) + index) % 16}"
    return f"{url.rstrip('/')}/{index % 16}"


_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and _worker[2:].isdigit() and os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = redis_database(os.environ["REDIS_URL"], int(_worker[2:]))
