from __future__ import annotations

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.contenttypes.models import ContentType

from comms_platform.celery import app as celery_app
from event_webhooks.services import endpoint_cache
from orchestrator import registry
from orchestrator.api import badkeys
from orchestrator.api.auth import api_key_create, key_cache
from orchestrator.models import AgentRegistration, ApiKeyRole


@pytest.fixture(autouse=True)
def _in_process_tasks(settings):
    """Unit tests run Celery tasks in process; integration tests start real workers."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    settings.DISPATCH_IN_BACKGROUND = False
    registry.invalidate()
    key_cache.clear()
    badkeys.reset()
    endpoint_cache.prime([])  # each test starts with no webhook endpoints (creating one clears it)
    _empty_webhook_buffers()
    yield
    celery_app.conf.task_always_eager = previous
    registry.invalidate()


def _empty_webhook_buffers() -> None:
    """A callback buffered by one test (agents/common/webhook_buffer.py) and not drained must
    not turn up in the next test's database."""
    if settings.REDIS_URL:
        from agents.common import webhook_buffer

        client = webhook_buffer.client()
        keys = list(client.scan_iter(f"{webhook_buffer.PREFIX}*"))
        if keys:
            client.delete(*keys)


@pytest.fixture(autouse=True)
def _fresh_content_types():
    """A test on a transactional database flushes and re-creates the content types with new
    ids; the in-process ContentType cache would still hand out the old ones (an admin log entry
    of a later test then breaks its foreign key). Which test runs after which depends on the
    order and, with pytest-xdist, on the process."""
    ContentType.objects.clear_cache()


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """A new channel layer for every test. channels_redis keeps its receive state (a lock, a
    count, the event loop of the first receive) on the layer object, and every async_to_sync in
    a test runs its own event loop: a layer shared across tests let a consumer cancelled with
    one test's loop leave the next test's loop waiting forever on the dead one (seen as a hang in
    Runner.close of a websocket test). Production has one loop per process."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def in_memory_channel_layer(settings):
    """Consumers tested in process, on the test's own event loop: the in-memory layer (the
    embedded default's). A consumer refused at connect still subscribes to the layer, and the
    Redis layer's blocking read, cancelled when async_to_sync closes its loop, could keep that
    loop from closing (a hang in Runner.close). The Redis layer is tested across processes:
    uvicorn, gunicorn and Celery workers in tests/dashboard/test_browser_production.py."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def api_key(db) -> str:
    """A client key with every grant (its own tasks and others', contacts read and write):
    the tests of the endpoints themselves; tests/security/test_api_scopes.py narrows them."""
    return api_key_create(name="test-client", contacts="write", all_tasks=True)[1]


@pytest.fixture
def far_agent(db) -> AgentRegistration:
    """A remote agent ("far") serving remote.echo; its key reports its tasks."""
    return AgentRegistration.objects.create(task_type="remote.echo", agent="far", channel="system", kind="remote",
                                            queue="remote", url="https://far-agent.example.com/tasks",
                                            dispatch_only=True)  # fmt: skip


@pytest.fixture
def agent_key(far_agent) -> str:
    return api_key_create(name="test-agent", role=ApiKeyRole.AGENT, agent_registration=far_agent)[1]


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


@pytest.fixture
def from_the_internet(settings):
    """Requests from public client addresses, as a deployment receives them.

    Test mode answers only this machine (``LoopbackOnlyMiddleware``); tests of what a
    deployment does with a client's address (lockouts, per-address throttling) take the guard
    off, as production mode does.
    """
    settings.MIDDLEWARE = [
        m for m in settings.MIDDLEWARE if m != "comms_platform.testmode.LoopbackOnlyMiddleware"
    ]


@pytest.fixture
def sendgrid(settings):
    """The real SendGrid provider pointed at a local fake of the v3 API (tests/fakes/sendgrid.py)."""
    from tests.fakes.sendgrid import FakeSendGrid

    with FakeSendGrid() as fake:
        settings.EMAIL_SIMULATED = False
        settings.EMAIL_PROVIDER = "sendgrid"
        settings.EMAIL_FALLBACK_PROVIDER = ""
        settings.SENDGRID_API_KEY = fake.api_key
        settings.SENDGRID_API_BASE_URL = fake.url
        yield fake
