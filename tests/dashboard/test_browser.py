"""The console in a real headless Chromium against one ASGI server (the `make run` layout), as
an operator uses it. Live updates caused by real actions, in the production layout, are in
test_browser_production.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from dossiers.models import Call, Contact
from orchestrator.models import Task
from orchestrator.services import task_create, task_transition
from tests.dashboard.conftest import inbound, register_console_types
from tests.support.services import (
    BIN,
    ROOT,
    free_port,
    platform_env,
    stop_process,
    unavailable,
    wait_for_port,
)
from tests.support.services import transactional_db as _transactional_db

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "var" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip

pytestmark = [pytest.mark.browser, pytest.mark.services, _transactional_db]


@pytest.fixture
def asgi_server(redis_url):
    """uvicorn serving comms_platform.asgi, sharing this test's database and Redis channel layer."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = platform_env(REDIS_URL=redis_url, PUBLIC_BASE_URL=base, CSRF_TRUSTED_ORIGINS=base)
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"uvicorn-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "uvicorn"), "comms_platform.asgi:application", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, proc=proc)
        yield base
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def browser_page(monkeypatch):
    if not Path(CHROMIUM).exists():
        unavailable(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM calls
    # between browser steps are plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            browser.close()
            # Close the connection the test body opened while Playwright ran, so that the
            # test database can be dropped at the end of the session.
            connections.close_all()


def test_operator_day_in_the_console(asgi_server, browser_page, django_user_model):
    assert shutil.which("uvicorn") or (BIN / "uvicorn").exists()
    register_console_types()
    django_user_model.objects.create_user("olivia", "o@example.com", "pw-olivia-123", is_staff=True,
                                          is_superuser=True)  # fmt: skip
    ada = Contact.objects.create(name="Ada Lovelace", phone="+14155550101", email="ada@example.com")
    grace = Contact.objects.create(name="Grace Hopper", phone="+14155550102", email="grace@example.com")
    sms, _ = task_create(
        type="sms.send", payload={"to": ada.phone, "body": "Your order shipped"}, contact_id=ada.pk
    )
    task_transition(task_id=sms.id, to="succeeded", actor="webhook", provider_id="SM" + "a" * 32)
    task_create(type="email.send", payload={"to": grace.email, "subject": "Hello"}, contact_id=grace.pk)
    call_task, _ = task_create(type="call.outbound", payload={"to": grace.phone}, contact_id=grace.pk)
    Call.objects.create(contact=grace, task=call_task, from_address="+14155550000", to_address=grace.phone,
                        status="in-progress", occurred_at=timezone.now())  # fmt: skip
    inbound(ada, "Hi, where is my parcel?")
    page = browser_page
    base = asgi_server

    # Log in.
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", "pw-olivia-123")
    page.click("input[type=submit]")
    page.wait_for_selector("nav.cc-nav")
    page.screenshot(path=str(SHOTS / "01-logged-in.png"), full_page=True)

    # Filter the task list by channel.
    page.goto(f"{base}/admin/orchestrator/task/")
    assert page.locator("#result_list tbody tr").count() == 4
    page.locator("#changelist-filter").get_by_role("link", name="Sms", exact=True).click()
    page.wait_for_url("**channel__exact=sms**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2  # the sms.send and the sms.inbound
    assert page.locator("#result_list tbody tr .cc-chan-sms").count() == 2
    page.screenshot(path=str(SHOTS / "02-tasks-filtered-by-channel.png"), full_page=True)

    # Open a task and see its events.
    page.locator("#result_list").get_by_role("link", name="sms.send").click()
    events = page.locator("#cc-events")
    events.wait_for()
    assert "in_progress → succeeded" in events.inner_text()
    assert "SM" + "a" * 32 in page.content()
    page.screenshot(path=str(SHOTS / "03-task-events.png"), full_page=True)

    # A live call's page opens its socket (on this single-host layout, as `make run` serves it).
    # Turns arriving live are tested in test_browser_production.py, caused by a real call.
    page.goto(f"{base}/admin/calls/")
    page.get_by_role("link", name="Listen").click()
    page.wait_for_function("document.getElementById('cc-live-state').textContent === 'live'")
    page.screenshot(path=str(SHOTS / "04-live-call.png"), full_page=True)

    # Claim an inbound message and reply.
    page.goto(f"{base}/admin/conversations/?folder=all")
    page.wait_for_function("document.getElementById('cc-live-state').textContent === 'live'")
    assert "Hi, where is my parcel?" in page.locator("#cc-conversations-table").inner_text()
    page.locator("#cc-conversations-table tr", has_text="where is my parcel").get_by_role(
        "link", name="Open"
    ).click()
    page.click("#cc-claim")
    page.fill("#cc-reply", "It arrives tomorrow before noon.")
    page.click("#cc-send")
    page.locator("#cc-thread .cc-out", has_text="It arrives tomorrow before noon.").wait_for()
    page.screenshot(path=str(SHOTS / "05-inbox-reply.png"), full_page=True)
    page.goto(f"{base}/admin/conversations/?folder=mine")
    page.locator("#cc-conversations-table tr.cc-mine").wait_for()
    page.screenshot(path=str(SHOTS / "06-inbox-queue.png"), full_page=True)

    # The contact's dossier, and the operations pages.
    page.goto(f"{base}/admin/dossiers/contact/{ada.pk}/change/")
    assert "Hi, where is my parcel?" in page.locator("#cc-dossier").inner_text()
    page.screenshot(path=str(SHOTS / "07-contact.png"), full_page=True)
    page.goto(f"{base}/admin/operations/")
    page.click("#cc-check")
    assert "simulated" in page.locator("#cc-results").inner_text()
    page.screenshot(path=str(SHOTS / "08-operations.png"))
    page.goto(f"{base}/admin/health/")
    page.locator("#cc-health").wait_for()
    page.screenshot(path=str(SHOTS / "09-health.png"), full_page=True)
    reply = Task.objects.get(type="sms.send", parent__type="sms.inbound")
    assert reply.payload == {"to": ada.phone, "body": "It arrives tomorrow before noon."}
    assert settings.REDIS_URL
