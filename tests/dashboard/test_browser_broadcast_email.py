"""An email broadcast from the console in headless Chromium, in the production layout of
render.yaml (test_browser_broadcasts.py's: gunicorn for pages, uvicorn for websockets, a real
Celery worker): a supervisor uploads a CSV of email addresses with bad rows by clicking the file
input, reads the preview (subject and message rendered per recipient, each bad row with its line
and reason), confirms, and watches every good recipient delivered. The simulated email provider
is the other side: its signed SendGrid events reach the web host and are stored per email."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from broadcasts.models import Broadcast, BroadcastStatus, Recipient
from dossiers.models import Contact, Email, EmailEvent
from tests.dashboard.test_browser_broadcasts import count, layout, sue  # noqa: F401  (fixtures)
from tests.dashboard.test_browser_production import browser, shot, signed_in_page  # noqa: F401
from tests.support.services import transactional_db as _transactional_db
from tests.support.services import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.worker, _transactional_db]


def write_csv(rows: list[str]) -> Path:
    path = Path(tempfile.mkdtemp(prefix="upload-")) / "newsletter.csv"
    path.write_bytes(("\ufeffemail,first_name\r\n" + "".join(f"{row}\r\n" for row in rows)).encode())
    return path


def test_email_upload_preview_confirm_and_the_simulated_provider_delivers_each_good_row(
    layout,  # noqa: F811
    browser,  # noqa: F811
    sue,  # noqa: F811
):
    ada = Contact.objects.create(name="Ada", email="ada@example.org")  # matched whatever the case
    rows = [
        "Ada@Example.org,Ada",  # 2
        "ada@example.org,Ada again",  # 3: the same address
        "not-an-address,Bob",  # 4
        "grace@example.org,Grace",  # 5
        ",Nobody",  # 6
        "linus@example.org,<Linus>",  # 7
    ]
    page, _ = signed_in_page(browser, layout, sue)
    page.goto(f"{layout.web}/admin/broadcasts/")
    page.click("#cc-bc-new")
    page.fill("#id_name", "newsletter")
    page.select_option("#id_channel", "email")
    page.fill("#id_subject", "Spring news for {{ first_name }}")
    page.fill("#id_body", "Dear {{ first_name }}, the spring sale starts today.")
    page.fill("#id_html", "<p>Dear <b>{{ first_name }}</b>, the spring sale starts today.</p>")
    with page.expect_file_chooser() as chooser:
        page.click("#id_file")
    chooser.value.set_files(str(write_csv(rows)))
    with page.expect_navigation():
        page.click("#cc-bc-preview")
    assert not Broadcast.objects.filter(name="newsletter").exists()  # previewed, nothing created
    bad = {int(row.get_attribute("data-line")): row.locator("td").nth(2).inner_text()
           for row in page.locator("#cc-bc-bad-rows tr[data-line]").all()}  # fmt: skip
    assert bad == {3: "duplicate of line 2", 4: "bad email address", 6: "missing address"}
    previews = {
        row.get_attribute("data-to"): row for row in page.locator("#cc-bc-previews tr[data-to]").all()
    }
    assert sorted(previews) == ["ada@example.org", "grace@example.org", "linus@example.org"]
    assert previews["grace@example.org"].locator(".cc-bc-subject").inner_text() == "Spring news for Grace"
    assert "Dear Grace, the spring sale starts today." in previews["grace@example.org"].inner_text()
    assert previews["linus@example.org"].locator(".cc-bc-subject").inner_text() == "Spring news for <Linus>"
    shot(page, "broadcast-email-preview")
    with page.expect_navigation():
        page.click("#cc-bc-confirm")
    bid = page.url.rstrip("/").rsplit("/", 1)[1]
    wait_until(lambda: count(page, "delivered") == 3 if page.locator("#cc-bc-counts").count() else False,
               timeout=60, message="every good recipient delivered, shown in the page")  # fmt: skip
    broadcast = Broadcast.objects.get(pk=bid)
    assert broadcast.channel == "email" and broadcast.total == 3 and broadcast.created_by == "sue"
    assert broadcast.status == BroadcastStatus.COMPLETED
    recipients = {r.address: r for r in Recipient.objects.filter(broadcast_id=bid)}
    assert set(recipients) == {"ada@example.org", "grace@example.org", "linus@example.org"}
    assert recipients["ada@example.org"].contact_id == ada.id
    shot(page, "broadcast-email-done")
    # The provider side: one email each through the simulated provider, with its id, and the
    # signed events it sent back (processed, delivered, open) stored against that email.
    emails = {e.to_address: e for e in Email.objects.filter(correlation_id=f"broadcast:{bid}")}
    assert set(emails) == set(recipients)
    assert {e.provider for e in emails.values()} == {"simulated"}
    assert {r.provider_id for r in recipients.values()} == {e.provider_message_id for e in emails.values()}
    assert emails["linus@example.org"].subject == "Spring news for <Linus>"
    assert emails["grace@example.org"].text_body == "Dear Grace, the spring sale starts today."
    delivered = EmailEvent.objects.filter(email__in=emails.values(), event="delivered")
    assert sorted(delivered.values_list("email__to_address", flat=True)) == sorted(recipients)
