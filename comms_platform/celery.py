"""The Celery app: one queue per agent (settings.AGENT_QUEUES), configured not to lose work."""

import os

from celery import Celery
from celery.signals import beat_init, setup_logging, worker_init
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "comms_platform.settings")

# redis:// and rediss:// broker URLs use kombu's Redis transport with one fix for a lost broker
# (comms_platform/broker.py). The alias, not broker_transport: kombu keys rediss's TLS defaults
# on the scheme's name.
TRANSPORT_ALIASES["redis"] = TRANSPORT_ALIASES["rediss"] = "comms_platform.broker:Transport"

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


@worker_init.connect
@beat_init.connect
def _refuse_a_wrong_configuration(**kwargs) -> None:
    """A worker or beat starts only when the startup checks pass (comms_platform/checks.py)."""
    from comms_platform.checks import refuse_to_start

    refuse_to_start()
