"""WSGI entry point: the API, webhooks and admin are served from sync workers (gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "comms_platform.settings")

application = get_wsgi_application()

# Twilio's status callbacks, three per message sent, skip Django's request cycle when they are
# well-formed and signed (agents/messaging/ingress.py); everything else is Django's.
from agents.messaging.ingress import StatusCallbackIngress  # noqa: E402

application = StatusCallbackIngress(application)

from comms_platform.checks import refuse_to_start  # noqa: E402

refuse_to_start()  # a wrong configuration stops gunicorn here (system checks comms.E001-E005)
