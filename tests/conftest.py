from __future__ import annotations

import pytest
from django.conf import settings

from comms_platform.celery import app as celery_app
from orchestrator import registry
from orchestrator.api.auth import api_key_create, key_cache
from orchestrator.models import ApiKeyRole


@pytest.fixture(autouse=True)
def _in_process_tasks(settings):
    """Unit tests run Celery tasks in process; integration tests start real workers."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    settings.DISPATCH_IN_BACKGROUND = False
    registry.invalidate()
    key_cache.clear()
    yield
    celery_app.conf.task_always_eager = previous
    registry.invalidate()


@pytest.fixture
def api_key(db) -> str:
    return api_key_create(name="test-client")[1]


@pytest.fixture
def agent_key(db) -> str:
    return api_key_create(name="test-agent", role=ApiKeyRole.AGENT)[1]


@pytest.fixture
def api(client, api_key):
    """A Django test client that sends the API key on every request."""
    client.defaults["HTTP_AUTHORIZATION"] = f"Api-Key {api_key}"
    return client


@pytest.fixture
def redis_url() -> str:
    from tests.support.services import unavailable

    if not settings.REDIS_URL:
        unavailable("needs Redis (set REDIS_URL=redis://…)")
    return settings.REDIS_URL
