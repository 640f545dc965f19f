"""Broadcasts in headless Chromium, in the production layout of render.yaml (see
test_browser_production.py): pages from gunicorn on ``localhost``, websockets from uvicorn on
``127.0.0.1`` over the Redis channel layer, a real Celery worker sending through the simulated
Twilio, whose signed status callbacks (queued → sent → delivered) come back to the web host.

A supervisor uploads a CSV by clicking the file input, previews, confirms by a click and watches
the progress bar reach 100 % and every message delivered, pushed into the open page. Pause and
Cancel are clicked in the page, and what the provider accepted is read from its own signed
callbacks (each message it accepts sends them): nothing more leaves after either click.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connections

from agents.common.models import WebhookEvent
from broadcasts.models import Broadcast, Recipient
from tests.dashboard.test_browser_production import (
    CHROMIUM,
    PASSWORD,
    Layout,
    browser,  # noqa: F401  (the fixture)
    mark_document,
    same_document,
    shot,
    signed_in_page,
    wait_live,
)
from tests.support.services import (
    BIN,
    ROOT,
    celery_worker,
    free_port,
    platform_env,
    stop_process,
    unavailable,
    wait_for_port,
    wait_until,
)
from tests.support.services import transactional_db as _transactional_db

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.worker, _transactional_db]
CALLBACK_DELAY = 0.4  # seconds between the simulated provider's queued, sent and delivered callbacks
SETTLE = 3 * CALLBACK_DELAY + 2.5  # a message accepted before this long ago has called back


@pytest.fixture(scope="module")
def layout(django_db_setup, django_db_blocker):
    if not settings.REDIS_URL:
        unavailable("needs Redis (set REDIS_URL=redis://…) for the channel layer and the Celery broker")
    if not Path(CHROMIUM).exists():
        unavailable(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    web_port, rt_port = free_port(), free_port()
    web, rt = f"http://localhost:{web_port}", f"http://127.0.0.1:{rt_port}"
    with django_db_blocker.unblock():
        env = platform_env(
            REDIS_URL=settings.REDIS_URL, PUBLIC_BASE_URL=web, PUBLIC_WS_BASE_URL=rt.replace("http", "ws", 1),
            CSRF_TRUSTED_ORIGINS=web, ALLOWED_HOSTS="localhost,127.0.0.1",
            TWILIO_ACCOUNT_SID=settings.TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN=settings.TWILIO_AUTH_TOKEN,
            MESSAGING_SIMULATED_CALLBACK_DELAY=str(CALLBACK_DELAY), MESSAGING_RATE_PER_SECOND="0",
            BROADCAST_PARALLEL_BATCHES="2",
        )  # fmt: skip
    logs = Path(tempfile.mkdtemp(prefix="broadcast-layout-"))
    layout = Layout(web, rt, env, logs)
    with ExitStack() as stack:
        web_log = stack.enter_context(open(logs / "gunicorn.log", "w"))
        gunicorn = subprocess.Popen(
            [str(BIN / "gunicorn"), "comms_platform.wsgi:application", "-b", f"127.0.0.1:{web_port}", "-w", "1",
             "--worker-class", "gthread", "--threads", "8", "--timeout", "60"],
            cwd=ROOT, env=env, stdout=web_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(stop_process, gunicorn)
        layout.start_realtime()
        stack.callback(layout.stop_realtime)
        stack.enter_context(celery_worker(env, concurrency=2, log_path=logs / "worker.log"))
        wait_for_port(web_port, timeout=60, proc=gunicorn)
        yield layout
    connections.close_all()


@pytest.fixture
def sue(django_user_model):
    """A supervisor (the role migration's group), not a superuser: the roles decide."""
    user = django_user_model.objects.create_user("sue", "sue@example.com", PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="supervisor"))
    return user


def write_csv(rows: list[str]) -> Path:
    path = Path(tempfile.mkdtemp(prefix="upload-")) / "customers.csv"
    path.write_bytes(("\ufeffphone,first_name\r\n" + "".join(f"{row}\r\n" for row in rows)).encode())
    return path


def upload_and_confirm(page, layout: Layout, csv_path: Path, *, name: str, rate: str) -> tuple[str, dict]:
    """Through the pages, by clicks: the list, New broadcast, the form, Preview, Confirm. Returns
    the broadcast's id (from the watch page's address) and the preview's bad rows {line: reason}."""
    page.goto(f"{layout.web}/admin/broadcasts/")
    page.click("#cc-bc-new")
    page.fill("#id_name", name)
    page.select_option("#id_channel", "sms")
    page.fill("#id_body", "Hello {{ first_name }}, our spring sale starts today.")
    page.fill("#id_rate_per_second", rate)
    with page.expect_file_chooser() as chooser:
        page.click("#id_file")  # the operator's click opens the file chooser
    chooser.value.set_files(str(csv_path))
    with page.expect_navigation():
        page.click("#cc-bc-preview")
    assert not Broadcast.objects.filter(name=name).exists()  # previewed, nothing created
    bad = {int(row.get_attribute("data-line")): row.locator("td").nth(2).inner_text()
           for row in page.locator("#cc-bc-bad-rows tr[data-line]").all()}  # fmt: skip
    shot(page, f"broadcast-{name}-preview")
    with page.expect_navigation():
        page.click("#cc-bc-confirm")
    bid = page.url.rstrip("/").rsplit("/", 1)[1]
    # The confirm answers at once ("importing"); the worker's import task inserts the recipients.
    wait_until(lambda: Broadcast.objects.get(pk=bid).status != "importing", timeout=30, message="the import")
    return bid, bad


def accepted_by_provider() -> dict[str, str]:
    """What the simulated Twilio accepted: every message it takes calls back (signed) to the web
    host; the callbacks are stored before anything else. {MessageSid: To}."""
    return {e.payload["MessageSid"]: e.payload["To"] for e in WebhookEvent.objects.filter(provider="twilio")
            if e.payload.get("MessageSid", "").startswith("SM") and e.payload.get("To", "").startswith("+1415555")}  # fmt: skip


def count(page, name: str) -> int:
    return int(page.locator(f'#cc-bc-counts [data-count="{name}"]').inner_text())


def test_upload_preview_confirm_and_watch_the_progress_reach_100_percent_live(layout, browser, sue):  # noqa: F811
    good = [f"+1415555{300 + n:04d}" for n in range(9)]
    rows = [f"{number},P{n}" for n, number in enumerate(good)]
    rows[3:3] = ["12345,Shorty", f"{good[0]},Again", ",Nobody"]  # lines 5, 6, 7: bad
    page, sockets = signed_in_page(browser, layout, sue)
    bid, bad = upload_and_confirm(page, layout, write_csv(rows), name="spring", rate="3")
    assert bad == {5: bad[5], 6: "duplicate of line 2", 7: "missing address"}
    assert bad[5].startswith("bad phone number")
    broadcast = Broadcast.objects.get(pk=bid)
    assert broadcast.total == 9 and broadcast.created_by == "sue"
    wait_live(page)
    mark_document(page)
    [socket] = [s for s in sockets if f"/ws/broadcasts/{bid}/" in s.url]
    assert socket.url.startswith(layout.rt.replace("http", "ws", 1))  # the realtime host, with a ticket
    seen = set()
    for _ in range(600):  # watch the bar move, pushed into the page
        seen.add(page.locator("#cc-bc-percent").inner_text())
        if count(page, "delivered") == 9:
            break
        time.sleep(0.1)
    assert page.locator("#cc-bc-percent").inner_text() == "100 %"
    assert page.locator("#cc-bc-progress").get_attribute("value") == "100"
    assert count(page, "delivered") == 9 and count(page, "failed") == 0
    assert len(seen) >= 2 and "100 %" in seen, seen  # it moved in steps, pushed, not in one load
    assert same_document(page)  # no reload: every change came over the socket
    shot(page, "broadcast-spring-done")
    # The provider side: exactly the good numbers, one message each, each delivered.
    accepted = accepted_by_provider()
    assert sorted(accepted.values()) == sorted(good)
    delivered = {e.payload["To"] for e in WebhookEvent.objects.filter(provider="twilio")
                 if e.payload.get("MessageStatus") == "delivered"}  # fmt: skip
    assert delivered == set(good)
    assert set(Recipient.objects.filter(broadcast_id=bid).values_list("provider_id", flat=True)) == set(
        accepted
    )


def test_pause_and_cancel_clicked_in_the_page_stop_the_sends_at_the_provider(layout, browser, sue):  # noqa: F811
    numbers = [f"+1415555{400 + n:04d}" for n in range(40)]
    page, _ = signed_in_page(browser, layout, sue)
    bid, bad = upload_and_confirm(page, layout, write_csv([f"{n},P{i}" for i, n in enumerate(numbers)]),
                                  name="slow", rate="2")  # fmt: skip
    assert bad == {}
    wait_live(page)
    wait_until(lambda: len(accepted_by_provider()) >= 3, timeout=30, message="the first sends")

    with page.expect_navigation():
        page.click("#cc-bc-pause")
    page.wait_for_selector("#cc-bc-resume")
    assert Broadcast.objects.get(pk=bid).status == "paused"
    time.sleep(SETTLE)  # what was in flight at the click has called back by now
    at_pause = accepted_by_provider()
    time.sleep(SETTLE)
    assert accepted_by_provider() == at_pause, "the provider received messages while paused"
    assert Recipient.objects.filter(broadcast_id=bid, status__in=["sent", "delivered"]).count() == len(
        at_pause
    )
    wait_live(page)
    page.wait_for_function("document.querySelector('#cc-bc-counts [data-count=\"delivered\"]').textContent"
                           f" === '{len(at_pause)}'")  # fmt: skip
    shot(page, "broadcast-slow-paused")

    with page.expect_navigation():
        page.click("#cc-bc-resume")
    wait_until(
        lambda: len(accepted_by_provider()) >= len(at_pause) + 3, timeout=30, message="sends after resume"
    )
    page.once("dialog", lambda dialog: dialog.accept())  # "Cancel this broadcast?"
    with page.expect_navigation():
        page.click("#cc-bc-cancel")
    page.wait_for_selector("#cc-bc-status .cc-warn")
    assert Broadcast.objects.get(pk=bid).status == "cancelled"
    time.sleep(SETTLE)
    at_cancel = accepted_by_provider()
    time.sleep(SETTLE)
    assert accepted_by_provider() == at_cancel, "the provider received messages after the cancel"
    assert len(at_pause) < len(at_cancel) < len(numbers)
    statuses = dict(Recipient.objects.filter(broadcast_id=bid).values_list("address", "status"))
    sent = {a for a, s in statuses.items() if s in ("sent", "delivered")}
    assert sent == set(at_cancel.values())  # every recipient the provider took is recorded, no other
    assert {s for a, s in statuses.items() if a not in sent} == {"cancelled"}
    wait_live(page)
    page.wait_for_function("document.querySelector('#cc-bc-counts [data-count=\"cancelled\"]').textContent"
                           f" === '{len(numbers) - len(at_cancel)}'")  # fmt: skip
    assert page.locator("#cc-bc-percent").inner_text() == "100 %"
    shot(page, "broadcast-slow-cancelled")
