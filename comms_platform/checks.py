"""Startup refusal as Django system checks (tag ``comms``).

``manage.py check`` (and ``check --deploy``, ``migrate``, ``runserver``, every command that
runs the checks) reports them; the process entry points that Django does not check —
gunicorn (``wsgi.py``), uvicorn (``asgi.py``) and Celery workers and beat (``celery.py``) —
call ``refuse_to_start()``, which runs the same checks and stops the process on an error.

* ``comms.E001`` COMMS_MODE is neither ``test`` nor ``production``;
* ``comms.E002`` test mode on Render (simulated providers, a local SECRET_KEY);
* ``comms.E003`` production mode with a missing, malformed or placeholder variable
  (``comms_platform.config.startup_problems``; secret values are never printed);
* ``comms.E004`` test mode serving hosts other than this machine without
  ALLOW_TEST_MODE_ON_NETWORK;
* ``comms.E005`` VOICE_MODE is neither ``conversationrelay`` nor ``gather``.

A leaf: it imports no app.
"""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core import checks

from comms_platform import config as platform_config
from comms_platform import testmode

TAG = "comms"
CONFIG_HINT = "Run `python manage.py config_report --mode production` to see every variable's state."


@checks.register(TAG)
def check_mode(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    mode = os.environ.get("COMMS_MODE", "test") or "test"
    if mode not in ("test", "production"):
        return [checks.Error(f"COMMS_MODE must be 'test' or 'production', not {mode!r}.", id="comms.E001")]
    if settings.TEST_MODE and os.environ.get("RENDER"):  # Render sets RENDER=true in every service
        # Test mode uses simulated providers and a local SECRET_KEY: never on a deployment.
        return [
            checks.Error(
                "COMMS_MODE is unset or 'test' on Render: set COMMS_MODE=production (render.yaml does).",
                id="comms.E002",
            )
        ]
    return []


@checks.register(TAG)
def check_production_configuration(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if settings.TEST_MODE:
        return []
    problems = platform_config.startup_problems(os.environ, mode="production")
    if not problems:
        return []
    return [
        checks.Error(platform_config.format_startup_problems(problems), hint=CONFIG_HINT, id="comms.E003")
    ]


@checks.register(TAG)
def check_test_mode_hosts(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if not settings.TEST_MODE or settings.ALLOW_TEST_MODE_ON_NETWORK:
        return []
    hosts = testmode.non_local_hosts(settings.ALLOWED_HOSTS)
    if not hosts:
        return []
    return [
        checks.Error(f"ALLOWED_HOSTS names {', '.join(hosts)}: {testmode.NETWORK_REFUSAL}", id="comms.E004")
    ]


@checks.register(TAG)
def check_voice_mode(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if settings.VOICE_MODE in ("conversationrelay", "gather"):
        return []
    return [
        checks.Error(
            f"VOICE_MODE must be 'conversationrelay' or 'gather', not {settings.VOICE_MODE!r}.",
            id="comms.E005",
        )
    ]


def refuse_to_start() -> None:
    """Stop this process (exit status 1, the errors on stderr) when a ``comms`` check fails."""
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    errors = [m for m in checks.run_checks(tags=[TAG]) if m.is_serious()]
    if errors:
        sys.exit("\n".join(f"({m.id}) {m.msg}" for m in errors))
