"""WSGI entry point: the API, webhooks and admin are served from sync workers (gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "comms_platform.settings")

application = get_wsgi_application()
