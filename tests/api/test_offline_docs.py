"""/api/docs/ (Swagger UI) and /api/redoc/ (ReDoc) work without internet: every script,
stylesheet and image they load is one of our own static files (drf-spectacular-sidecar)."""

from __future__ import annotations

import re

import pytest
import requests

from tests.support.services import platform_env, transactional_db, web_server

pytestmark = [transactional_db, pytest.mark.services]

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_only_our_own_static_files(page, api_key):
    with web_server(platform_env()) as base:
        html = requests.get(base + page, headers={"Authorization": f"Api-Key {api_key}"}, timeout=30)
        assert html.status_code == 200
        assets = [a for a in ASSET.findall(html.text) if not a.startswith("#")]
        assert any("drf_spectacular_sidecar" in a for a in assets), assets
        for asset in assets:
            assert not asset.startswith(("http://", "https://", "//")), f"{page} loads {asset} from elsewhere"
            response = requests.get(
                base + asset if asset.startswith("/") else f"{base}{page}{asset}", timeout=30
            )
            assert response.status_code == 200, asset
            assert len(response.content) > 100, asset
        # The script that starts Swagger UI / ReDoc is served too (it names the schema URL).
        assert "/api/schema/" in html.text or "schema" in html.text
