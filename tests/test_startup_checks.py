"""The startup refusal as Django system checks (comms_platform/checks.py): `manage.py check`
reports it, and the entry points Django does not check (WSGI, ASGI) stop on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from comms_platform import config
from tests.test_config import production_env

ROOT = Path(__file__).resolve().parent.parent
LEAK = "Leaky-Token-Value-That-Is-Not-Hex"


@pytest.fixture
def production(settings, monkeypatch):
    """This process as production: the schema's variables from ``production_env(**overrides)``."""

    def apply(**overrides: str | None) -> None:
        for name in [*config.properties(), "RENDER"]:
            monkeypatch.delenv(name, raising=False)
        for name, value in production_env(**overrides).items():
            monkeypatch.setenv(name, value)
        settings.COMMS_MODE, settings.TEST_MODE = "production", False

    return apply


def comms_errors() -> dict[str, str]:
    return {m.id: m.msg for m in checks.run_checks(tags=["comms"]) if m.is_serious()}


def test_check_refuses_a_placeholder_secret_without_printing_a_value(production):
    production(SECRET_KEY="changeme", TWILIO_AUTH_TOKEN=LEAK)
    with pytest.raises(SystemCheckError) as refused:
        call_command("check")
    text = str(refused.value)
    assert "comms.E003" in text and "Refusing to start in production mode:" in text
    assert "SECRET_KEY" in text and "TWILIO_AUTH_TOKEN" in text
    assert "config_report --mode production" in text
    assert LEAK not in text


def test_check_deploy_reports_it_too(production):
    production(SECRET_KEY=None)
    with pytest.raises(SystemCheckError, match=r"comms\.E003"):
        call_command("check", deploy=True)


def test_a_complete_production_environment_passes(production):
    production()
    assert comms_errors() == {}


def test_unknown_modes_are_refused(monkeypatch, settings):
    monkeypatch.setenv("COMMS_MODE", "staging")
    settings.VOICE_MODE = "dial"
    errors = comms_errors()
    assert "'staging'" in errors["comms.E001"]
    assert "'dial'" in errors["comms.E005"]


def test_test_mode_on_render_is_refused(monkeypatch, settings):
    monkeypatch.setenv("RENDER", "true")
    monkeypatch.delenv("COMMS_MODE", raising=False)
    settings.TEST_MODE = True
    assert "set COMMS_MODE=production" in comms_errors()["comms.E002"]


def test_the_asgi_entry_point_refuses_to_start():
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
           "COMMS_MODE": "production", "DJANGO_SETTINGS_MODULE": "comms_platform.settings",
           "TWILIO_AUTH_TOKEN": LEAK}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", "import comms_platform.asgi; print('STARTED')"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode != 0 and "STARTED" not in done.stdout
    assert "(comms.E003) Refusing to start in production mode:" in done.stderr
    assert LEAK not in done.stderr


def test_a_celery_worker_refuses_to_start():
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1",
           "COMMS_MODE": "production", "TWILIO_AUTH_TOKEN": LEAK}  # fmt: skip
    celery = Path(sys.executable).parent / "celery"
    done = subprocess.run([str(celery), "-A", "comms_platform", "worker", "--pool", "solo", "-c", "1"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "(comms.E003) Refusing to start in production mode:" in done.stderr
    assert "ready" not in done.stdout.lower()
    assert LEAK not in done.stderr + done.stdout
