"""Test mode end to end: an email broadcast through the simulated provider, whose signed
SendGrid event batches (one per event kind for the whole batch) come over HTTP to our own
webhook (a live server) and move the recipients to delivered."""

from __future__ import annotations

import pytest
from django.db import connection

from agents.email.providers.simulated import EVENTS
from broadcasts.models import Recipient, RecipientStatus
from broadcasts.services import broadcast_create
from dossiers.models import Email, EmailEvent
from tests.support.services import transactional_db, wait_until


@transactional_db
def test_simulated_email_broadcast_ends_delivered(live_server, settings):
    if connection.vendor == "sqlite":
        pytest.skip("needs PostgreSQL: the live server's threads and the batch write the same tables at once")
    settings.PUBLIC_BASE_URL = live_server.url
    settings.SENDGRID_EVENT_PUBLIC_KEY = ""  # test mode: the key derived from SECRET_KEY
    settings.EMAIL_SIMULATED = True
    people = [{"to": f"p{i}@example.org", "variables": {"name": f"P{i}"}} for i in range(5)]
    broadcast = broadcast_create(name="sim", channel="email", subject="Hi {{ name }}", body="Hello {{ name }}",
                                 recipients=people).broadcast  # fmt: skip

    def delivered() -> bool:
        return Recipient.objects.filter(broadcast=broadcast, status=RecipientStatus.DELIVERED).count() == 5

    wait_until(delivered, timeout=15, message="every recipient delivered")
    emails = Email.objects.filter(correlation_id=f"broadcast:{broadcast.id}")
    assert emails.count() == 5 and {e.provider for e in emails} == {"simulated"}
    rows = Recipient.objects.filter(broadcast=broadcast)
    assert {r.provider_id for r in rows} == {e.provider_message_id for e in emails}
    wait_until(lambda: EmailEvent.objects.filter(email__in=emails).count() == 5 * len(EVENTS), timeout=10,
               message="every event stored")  # fmt: skip
    assert sorted(emails.values_list("subject", flat=True)) == [f"Hi P{i}" for i in range(5)]
