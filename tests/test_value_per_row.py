"""comms_platform.db.ValuePerRow: per-row values from one JSON parameter, on the database in use
(PostgreSQL in CI, SQLite on the embedded default)."""

import pytest
from django.db import connection
from django.db.models import F
from django.db.models.functions import Coalesce
from django.test.utils import CaptureQueriesContext

from comms_platform.db import ValuePerRow
from dossiers.models import Contact, Message

pytestmark = pytest.mark.django_db


def test_each_row_takes_its_own_value_and_a_row_without_one_keeps_its_own():
    contact = Contact.objects.create(phone="+14155550100")
    messages = Message.objects.bulk_create(
        Message(contact=contact, channel="sms", direction="outbound", to_address="+14155550100",
                provider_sid="SMkept" if n == 3 else None, occurred_at=contact.created_at)
        for n in range(5)
    )  # fmt: skip
    ids = [m.id for m in messages]
    values = {ids[0]: "SMa", ids[1]: "SMb\"'\\é", ids[3]: "SMnot-taken"}  # ids[2], ids[4]: none
    with CaptureQueriesContext(connection) as ctx:
        Message.objects.filter(id__in=ids[:4]).update(
            provider_sid=Coalesce(F("provider_sid"), ValuePerRow(values))
        )
    assert len(ctx.captured_queries) == 1 and "CASE" not in ctx.captured_queries[0]["sql"]
    got = dict(Message.objects.filter(id__in=ids).values_list("id", "provider_sid"))
    assert got == {ids[0]: "SMa", ids[1]: "SMb\"'\\é", ids[2]: None, ids[3]: "SMkept", ids[4]: None}
