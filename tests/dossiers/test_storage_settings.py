"""ARTIFACT_STORAGE=s3 selects django-storages' S3 backend with presigned, expiring URLs.

Presigning is computed locally by boto3, so this runs offline; uploads to a real bucket are
not exercised here (no S3-compatible server runs in the test environment).
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.services import ROOT

SCRIPT = """
import django
django.setup()
from django.conf import settings
from django.core.files.storage import default_storage
print(settings.STORAGES["default"]["BACKEND"])
print(default_storage.url("artifacts/2026/11/abc", expire=settings.ARTIFACT_URL_TTL_SECONDS))
"""


def test_s3_storage_is_configured_from_the_aws_variables():
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "comms_platform.settings",
        "COMMS_MODE": "test",
        "ARTIFACT_STORAGE": "s3",
        "ARTIFACT_URL_TTL_SECONDS": "600",
        "AWS_STORAGE_BUCKET_NAME": "comms-artifacts",
        "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "AKIATESTTESTTEST",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key-for-presigning-only",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()  # fmt: skip
    assert out[0] == "storages.backends.s3.S3Storage"
    url = out[1]
    assert url.startswith("http://127.0.0.1:9000/comms-artifacts/artifacts/2026/11/abc?")
    assert "X-Amz-Expires=600" in url and "AKIATESTTESTTEST" in url
    assert "test-secret-key-for-presigning-only" not in url
