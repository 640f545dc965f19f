"""``manage.py check --deploy`` is clean (no warning either) with production settings."""

from __future__ import annotations

import os
import secrets
import subprocess

from cryptography.hazmat.primitives.asymmetric import ec

from agents.email import event_keys
from tests.support.services import BIN, ROOT


def production_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "COMMS_MODE": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "comms.example.com",
        "PUBLIC_BASE_URL": "https://comms.example.com",
        "DATABASE_URL": "postgres://comms:pw@127.0.0.1:5432/comms",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_SMS_FROM": "+14155550100",
        "TWILIO_VOICE_CALLER_ID": "+14155550101",
        "SENDGRID_API_KEY": "SG." + secrets.token_urlsafe(16) + "." + secrets.token_urlsafe(32),
        "SENDGRID_EVENT_PUBLIC_KEY": event_keys.public_key_b64(ec.generate_private_key(ec.SECP256R1())),
        "OPENAI_API_KEY": "sk-" + secrets.token_urlsafe(32),
        "REMOTE_AGENT_SECRET": secrets.token_urlsafe(40),
    }


def test_check_deploy_is_clean_in_production():
    done = subprocess.run([str(BIN / "python"), "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=production_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
