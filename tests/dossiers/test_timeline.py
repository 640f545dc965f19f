"""The merged timeline: order across channels, cursor pages, filters, correlations, query counts."""

from __future__ import annotations

import time

import pytest

from dossiers import selectors
from dossiers.models import AuditLog
from tests.dossiers.factories import alice, artifact, at, bob, call, email, message

pytestmark = pytest.mark.django_db


def interleaved(contact):
    """Twelve records on four kinds with interleaved times, two pairs at the same instant."""
    rec = artifact(contact, 0, kind="recording")
    html = artifact(contact, 5)
    return [
        ("message", message(contact, 1).id),
        ("call", call(contact, 2, recording=rec).id),
        ("email", email(contact, 3, html=html).id),
        ("message", message(contact, 4, channel="whatsapp", direction="inbound").id),
        ("artifact", html.id),
        ("email", email(contact, 5, direction="inbound").id),  # same instant as html: kind breaks the tie
        ("call", call(contact, 6, direction="inbound").id),
        ("message", message(contact, 7).id),
        ("message", message(contact, 7).id),  # same instant, same kind: id breaks the tie
        ("artifact", rec.id),
        ("email", email(contact, 8).id),
        ("call", call(contact, 9).id),
    ]


def expected_order(records):
    from dossiers.models import Artifact, Call, Email, Message

    models = {"message": Message, "email": Email, "call": Call, "artifact": Artifact}
    keyed = []
    for kind, pk in records:
        occurred = models[kind].objects.values_list("occurred_at", flat=True).get(pk=pk)
        keyed.append(((occurred, kind, pk.int if kind == "artifact" else pk), (kind, str(pk))))
    return [ident for _, ident in sorted(keyed, reverse=True)]


def walk(fetch):
    """Follow the cursor to the end; returns the entries and the number of pages."""
    seen, cursor, pages = [], None, 0
    while True:
        page = fetch(cursor)
        pages += 1
        seen += [(e["kind"], str(e["id"])) for e in page.entries]
        if page.next_cursor is None:
            return seen, pages
        cursor = page.next_cursor


def test_entries_are_merged_newest_first_across_channels():
    a = alice()
    records = interleaved(a)
    page = selectors.timeline_for_contact(contact_id=a.id, page_size=50)
    assert [(e["kind"], str(e["id"])) for e in page.entries] == expected_order(records)
    assert page.next_cursor is None
    assert page.entries[0]["occurred_at"] == at(9)


@pytest.mark.parametrize("page_size", [1, 2, 3, 5, 7])
def test_cursor_pages_cover_everything_once_in_order(page_size):
    a = alice()
    records = interleaved(a)
    seen, pages = walk(
        lambda c: selectors.timeline_for_contact(contact_id=a.id, cursor=c, page_size=page_size)
    )
    assert seen == expected_order(records)
    assert pages == -(-len(records) // page_size)


def test_entries_link_their_task_and_artifacts(api):
    from orchestrator.services import task_create

    a = alice()
    task, _ = task_create(type="diagnostic.echo", contact_id=a.id)
    rec = artifact(a, 0, kind="recording")
    call(a, 2, recording=rec)
    message(a, 3, task=task)
    body = api.get(f"/api/contacts/{a.id}/timeline/").json()
    by_kind = {e["kind"]: e for e in body["results"]}
    assert by_kind["message"]["task"] == str(task.id)
    assert by_kind["message"]["task_url"] == f"/api/tasks/{task.id}/"
    assert by_kind["call"]["artifacts"] == [f"/api/artifacts/{rec.id}/"]
    assert by_kind["artifact"]["artifacts"] == [f"/api/artifacts/{rec.id}/"]
    assert by_kind["call"]["task"] is None and by_kind["call"]["channel"] == "voice"


def test_api_pages_with_next_links_and_bounded_queries(api, django_assert_max_num_queries):
    a = alice()
    records = interleaved(a)
    url, seen = f"/api/contacts/{a.id}/timeline/?page_size=5", []
    while url:
        # key lookup + last_used, contact exists, the timeline, the audit row
        with django_assert_max_num_queries(5):
            response = api.get(url)
        assert response.status_code == 200, response.content
        seen += [(e["kind"], e["id"]) for e in response.json()["results"]]
        url = response.json()["next"]
    assert seen == expected_order(records)


def test_queries_per_page_do_not_grow_with_the_data(django_assert_num_queries):
    a = alice()
    for i in range(30):
        message(a, i)
        email(a, i + 0.5)
    for i in range(10):
        call(a, i + 0.25)
    with django_assert_num_queries(1):
        page = selectors.timeline_for_contact(contact_id=a.id, page_size=20)
    assert len(page.entries) == 20
    with django_assert_num_queries(1):
        selectors.timeline_for_contact(
            contact_id=a.id, filters=selectors.TimelineFilters(channels=("voice",))
        )


def test_filters_channel_direction_kind_and_time_range(api):
    a = alice()
    interleaved(a)

    def kinds(**params):
        body = api.get(f"/api/contacts/{a.id}/timeline/", params).json()
        return [(e["kind"], e["channel"], e["direction"]) for e in body["results"]]

    assert kinds(channel="whatsapp") == [("message", "whatsapp", "inbound")]
    assert {k for k, _, _ in kinds(channel="sms,voice")} == {"message", "call"}
    assert (
        all(d == "inbound" for _, _, d in kinds(direction="inbound")) and len(kinds(direction="inbound")) == 3
    )
    assert {k for k, _, _ in kinds(kind="artifact")} == {"artifact"}
    window = kinds(since=at(3).isoformat(), until=at(6).isoformat())
    assert window == [("email", "email", "inbound"), ("artifact", "", ""), ("message", "whatsapp", "inbound"),
                      ("email", "email", "outbound")]  # fmt: skip


def test_bad_filters_and_cursors_are_400s(api):
    a = alice()
    url = f"/api/contacts/{a.id}/timeline/"
    assert "fax" in api.get(url, {"channel": "fax"}).json()["error"]["message"]
    assert api.get(url, {"cursor": "not-a-cursor"}).json()["error"]["fields"]["cursor"]
    assert api.get(url, {"since": at(5).isoformat(), "until": at(1).isoformat()}).status_code == 400
    assert api.get("/api/contacts/00000000-0000-0000-0000-000000000000/timeline/").status_code == 404
    # Python accepts offsets PostgreSQL refuses (found by schemathesis): normalised to UTC.
    assert api.get(url, {"since": "0503-12-22T19:39:20-22:40"}).status_code == 200
    assert api.get("/api/correlations/a%00b/timeline/").status_code == 400
    assert api.get("/api/contacts/", {"search": "a\x00b"}).status_code == 400


def test_correlation_timeline_spans_contacts_and_is_audited(api):
    a, b = alice(), bob()
    message(a, 1, correlation_id="order-7")
    email(b, 2, correlation_id="order-7")
    call(a, 3, correlation_id="order-7")
    artifact(b, 4, correlation_id="order-7")
    message(a, 5, correlation_id="order-8")
    body = api.get("/api/correlations/order-7/timeline/").json()
    assert [(e["kind"], e["contact"]) for e in body["results"]] == [
        ("artifact", str(b.id)), ("call", str(a.id)), ("email", str(b.id)), ("message", str(a.id)),
    ]  # fmt: skip
    audit = AuditLog.objects.get(object_type="correlation")
    assert (audit.action, audit.object_id, audit.details["entries"]) == ("view_dossier", "order-7", 4)


def test_viewing_a_contact_timeline_is_audited_without_personal_data(api):
    a = alice()
    message(a, 1, body="my card is 4111 1111 1111 1111")
    api.get(f"/api/contacts/{a.id}/timeline/")
    audit = AuditLog.objects.get()
    assert (audit.actor, audit.action, audit.object_type, audit.object_id) == (
        "api-key:test-client", "view_dossier", "contact", str(a.id),
    )  # fmt: skip
    assert "4111" not in str(audit.details) and "+1415" not in str(audit.details)


def test_artifact_detail_gives_a_signed_url_that_expires(api, settings, tmp_path):
    from django.core import signing

    from dossiers.services import artifact_store

    settings.MEDIA_ROOT = tmp_path
    a = alice()
    stored = artifact_store(
        content=b"transcript", content_type="text/plain", kind="transcript", contact_id=a.id
    )
    url = api.get(f"/api/artifacts/{stored.id}/").json()["url"]
    path = url.removeprefix(settings.PUBLIC_BASE_URL)
    download = api.get(path)
    assert download.status_code == 200 and b"".join(download.streaming_content) == b"transcript"
    assert path.startswith("/a/") and api.get(path[:-2] + "x/").status_code == 404

    class Yesterday(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - settings.ARTIFACT_URL_TTL_SECONDS - 1)

    token = Yesterday(salt="dossiers.artifact-url", sep=".").sign(str(stored.id))
    assert api.get(f"/a/{token}/").status_code == 404


def test_artifact_whose_file_is_gone_is_a_clear_404(api, settings, tmp_path):
    from django.core.files.storage import default_storage

    from dossiers.services import artifact_store

    settings.MEDIA_ROOT = tmp_path
    stored = artifact_store(content=b"x", content_type="text/plain", kind="transcript", contact_id=alice().id)
    default_storage.delete(stored.storage_key)
    response = api.get(f"/api/artifacts/{stored.id}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "artifact_unavailable"
    assert "no longer in storage" in response.json()["error"]["message"]


def test_prepared_and_plain_paths_give_the_same_pages():
    """On PostgreSQL the page query is prepared unless queries are being logged."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    a = alice()
    interleaved(a)
    filters = selectors.TimelineFilters(directions=("outbound",), since=at(1))
    first = selectors.timeline_for_contact(contact_id=a.id, filters=filters, page_size=3)
    second = selectors.timeline_for_contact(
        contact_id=a.id, filters=filters, cursor=first.next_cursor, page_size=3
    )
    with CaptureQueriesContext(connection) as ctx:
        plain_first = selectors.timeline_for_contact(contact_id=a.id, filters=filters, page_size=3)
        plain_second = selectors.timeline_for_contact(
            contact_id=a.id, filters=filters, cursor=plain_first.next_cursor, page_size=3
        )
    assert "UNION ALL" in ctx.captured_queries[0]["sql"]
    assert (first.entries, second.entries) == (plain_first.entries, plain_second.entries)
    assert first.next_cursor == plain_first.next_cursor and len(first.entries + second.entries) == 6
