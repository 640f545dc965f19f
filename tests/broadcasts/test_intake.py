"""Intake at scale (issue 19): the E.164 fast path agrees with dossiers' normaliser, the
Recipient rows go in as a few set-based INSERTs, and bad rows keep their line and reason."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from broadcasts import addresses, rendering
from broadcasts.models import Recipient, RecipientIntake
from broadcasts.services import INSERT_BATCH, broadcast_create
from dossiers.models import Contact
from dossiers.services import InvalidPhoneNumber, normalize_phone

# Canonical E.164 numbers of several numbering plans: the fast path decides these.
DECIDED = ["+14155550100", "+442079460958", "+33612345678", "+4930123456", "+61412345678",
           "+8613812345678", "+393123456789", "+79161234567"]  # fmt: skip
# Not canonical, a national prefix, a leading zero, an unassigned or non-geographic code, too
# short: the fast path declines and phonenumbers decides.
UNDECIDED = ["+1 415 555 0101", "+1 (415) 555-0101", "004930123456", "+447911 123456",
             "+11234567890", "+4401234567890", "+800123456789", "+999123456789", "+1415", "nope", ""]  # fmt: skip


@pytest.mark.parametrize("raw", DECIDED)
def test_the_fast_path_accepts_canonical_numbers_exactly_as_phonenumbers_does(raw):
    assert addresses.fast_e164(raw) == raw == normalize_phone(raw)


@pytest.mark.parametrize("raw", UNDECIDED)
def test_what_the_fast_path_cannot_decide_goes_to_phonenumbers(raw):
    assert addresses.fast_e164(raw) is None
    try:
        expected = normalize_phone(raw)
    except InvalidPhoneNumber as exc:
        with pytest.raises(InvalidPhoneNumber) as err:
            addresses.normalize(raw)
        assert str(err.value) == str(exc)
    else:
        assert addresses.normalize(raw) == expected


def test_intake_rows_are_built_in_the_field_order_the_service_assumes():
    # broadcasts.services._insert_recipients builds RecipientIntake(...) positionally.
    assert [f.attname for f in RecipientIntake._meta.concrete_fields] == [
        "id",
        "broadcast_id",
        "line",
        "address",
        "contact_id",
        "variables",
    ]
    assert RecipientIntake._meta.db_table == Recipient._meta.db_table


@pytest.mark.django_db
def test_many_recipients_go_in_as_one_insert_per_batch_with_their_fields(django_capture_on_commit_callbacks):
    """A list longer than BROADCAST_INLINE_INTAKE_MAX: checked in the request (which stores one
    compressed row and names the refused rows), inserted by the import task."""
    n = 2 * INSERT_BATCH + 7
    people = [
        {"to": f"+1415{200 + i // 10_000}{i % 10_000:04d}", "variables": {"name": f"N{i}"}} for i in range(n)
    ]
    known = Contact.objects.create(name="Known", phone=people[5]["to"])
    people.append({"to": people[3]["to"], "variables": {"name": "dup"}})
    people.append({"to": "+1 415 200 0001", "variables": {"name": "dup in another form"}})
    people.append({"to": "+14152009999", "variables": {"name": ""}})
    with CaptureQueriesContext(connection) as request, django_capture_on_commit_callbacks() as queued:
        result = broadcast_create(
            name="big", channel="sms", body="Hi {{ name }}", recipients=people, start=False
        )
    assert not [q for q in request.captured_queries if "broadcasts_recipient" in q["sql"]]
    assert not [q for q in request.captured_queries if 'FROM "dossiers_contact"' in q["sql"]]  # linked later
    assert result.broadcast.status == "importing" and result.broadcast.total == n
    assert len(queued) == 1  # the import task, after the commit
    with CaptureQueriesContext(connection) as ctx:
        queued[0]()
    inserts = [q for q in ctx.captured_queries if q["sql"].startswith('INSERT INTO "broadcasts_recipient"')]
    if connection.vendor == "postgresql":  # one INSERT … UNNEST per 5,000 rows
        assert len(inserts) == 3 and all("UNNEST" in q["sql"] for q in inserts[:1])
    else:  # SQLite: as many INSERTs as its bound-variable limit asks
        assert inserts
    result.broadcast.refresh_from_db()
    assert result.broadcast.status == "draft" and result.broadcast.rejected == 3
    assert result.broadcast.total == n == Recipient.objects.filter(broadcast=result.broadcast).count()
    row = Recipient.objects.get(broadcast=result.broadcast, line=6)
    assert (row.address, row.contact_id, row.variables, row.status) == (
        known.phone,
        known.id,
        {"name": "N5"},
        "pending",
    )
    assert (row.reason, row.sender, row.provider_id, row.not_before, row.sent_at) == ("", "", "", None, None)
    assert row.updated_at is not None
    assert result.rejected == [
        {"line": n + 1, "address": people[3]["to"], "reason": "duplicate"},
        {"line": n + 2, "address": "+14152000001", "reason": "duplicate"},
        {"line": n + 3, "address": "+14152009999", "reason": "missing variable(s): name"},
    ]


def test_the_missing_variable_reason_is_the_renderers():
    with pytest.raises(rendering.RenderError) as err:
        rendering.render("{{ b }} {{ a }}", {"a": ""})
    result_reason = str(err.value)
    from broadcasts.services import _row

    row, reason = _row(
        "sms", 1, {"to": "+14155550100", "variables": {"a": ""}}, "{{ b }} {{ a }}", ["a", "b"]
    )
    assert row is None and reason == result_reason
