"""The Celery app: one queue per agent (settings.AGENT_QUEUES), configured not to lose work."""

import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "comms_platform.settings")

app = Celery("comms_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _configure_queues(sender: Celery, **kwargs) -> None:
    from django.conf import settings
    from kombu import Queue

    sender.conf.task_queues = [Queue(name) for name in settings.AGENT_QUEUES]
    # Read by celery.fixups.django under its old name: keep the DB connection
    # across tasks (Celery otherwise closes it around every task).
    sender.conf.CELERY_DB_REUSE_MAX = settings.CELERY_DB_REUSE_MAX


@setup_logging.connect
def _use_django_logging(**kwargs) -> None:
    """Keep Django's LOGGING (structlog, JSON) in workers instead of Celery's own setup."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
