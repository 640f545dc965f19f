"""Issue 16's stored XSS, replayed in a real headless Chromium against gunicorn: a logged-in
operator opens the link of a customer-supplied HTML (and SVG) artifact from the task page.
The script in it tries to read /admin/ with the operator's session and send it away; it
must never run."""

from __future__ import annotations

import contextlib

import pytest
from django.conf import settings

from orchestrator.services import task_create
from tests.dashboard.test_browser import browser_page  # noqa: F401 (fixture)
from tests.support.services import platform_env, transactional_db, web_server

pytestmark = [pytest.mark.browser, pytest.mark.services, transactional_db]

PAYLOAD = (
    "<script>document.title='RAN';"
    "fetch('/admin/').then(r => r.text()).then(t => fetch('/stolen/?' + encodeURIComponent(t.slice(0, 80))));"
    "</script>"
)
HTML = f"<html><head><title>doc</title></head><body>{PAYLOAD}<p>Invoice</p></body></html>".encode()
SVG = f'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">{PAYLOAD}</svg>'.encode()


def test_operator_opens_html_and_svg_artifact_links_and_no_script_runs(
    browser_page,  # noqa: F811
    django_user_model,
):
    from playwright.sync_api import Error as PlaywrightError

    from dossiers.services import artifact_store

    django_user_model.objects.create_user("olivia", "o@example.com", "pw-olivia-123", is_staff=True,
                                          is_superuser=True)  # fmt: skip
    task, _ = task_create(type="sms.send", payload={"to": "+14155550101", "body": "hi"})
    artifact_store(content=HTML, content_type="text/html", kind="media", task_id=task.pk)
    artifact_store(content=SVG, content_type="image/svg+xml", kind="media", task_id=task.pk)
    page = browser_page
    seen: list[str] = []
    page.context.on("request", lambda request: seen.append(request.url))
    env = platform_env(MEDIA_ROOT=str(settings.MEDIA_ROOT))
    with web_server(env) as base:
        page.goto(f"{base}/admin/login/?next=/admin/")
        page.fill("#id_username", "olivia")
        page.fill("#id_password", "pw-olivia-123")
        page.click("input[type=submit]")
        page.wait_for_url(f"{base}/admin/")
        page.goto(f"{base}/admin/orchestrator/task/{task.pk}/change/")
        links = page.locator("#cc-artifacts a", has_text="open")
        hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
        assert len(hrefs) == 2 and all(h.startswith("/a/") for h in hrefs)
        downloads = []
        for href in hrefs:
            before = len(seen)
            # "Download is starting" (an error to goto): the browser does not render it.
            with page.expect_download() as info, contextlib.suppress(PlaywrightError):
                page.goto(base + href)
            downloads.append(info.value.suggested_filename)
            page.wait_for_timeout(500)  # time for a script to reach out, had it run
            after = seen[before:]
            assert after == [base + href], after
        assert page.title() != "RAN"
    assert sorted(d.rsplit(".", 1)[1] for d in downloads) == ["html", "svg"]
    assert not [url for url in seen if "/stolen/" in url]
