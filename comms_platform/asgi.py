"""ASGI entry point: HTTP through Django, websockets through Channels.

In production the API and webhooks are served by gunicorn (WSGI) and this app serves the
websockets; in the embedded default (`make run` without Redis) it serves everything from
one process, because the in-memory channel layer and in-process tasks live there.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "comms_platform.settings")
django_asgi_app = get_asgi_application()

from comms_platform.checks import refuse_to_start  # noqa: E402

refuse_to_start()  # a wrong configuration stops uvicorn here (system checks comms.E001-E005)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from comms_platform.routing import provider_websocket_urlpatterns, websocket_urlpatterns  # noqa: E402
from comms_platform.testmode import loopback_only_websockets  # noqa: E402
from dashboard.live_auth import TicketAuthMiddleware  # noqa: E402

# The console's sockets are opened with a single-use ticket minted by the web service (the
# session cookie belongs to the pages' hostname); the ticket check includes the Origin.
browser_websockets = TicketAuthMiddleware(URLRouter(websocket_urlpatterns))
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Provider websockets (Twilio ConversationRelay) send no Origin and carry their own
        # signature; everything else is a browser socket behind the ticket and origin checks.
        "websocket": URLRouter([*provider_websocket_urlpatterns, re_path(r"", browser_websockets)]),
    }
)
if settings.TEST_MODE and not settings.ALLOW_TEST_MODE_ON_NETWORK:
    # HTTP is guarded by LoopbackOnlyMiddleware; websockets do not pass through it.
    application = loopback_only_websockets(application)
