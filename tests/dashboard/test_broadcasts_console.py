"""Broadcasts in the console, in process: the CSV upload's preview and bad-row report, nothing
created before confirm (nor by a failed confirm), the watch page and its controls, the
per-recipient CSV, the live socket, and who may do what. The sends themselves, through a real
worker, are in tests/dashboard/test_broadcast_upload_worker.py and the browser test."""

from __future__ import annotations

import csv
import io
import re

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from broadcasts import services as bc_services
from broadcasts import tasks
from broadcasts.models import Broadcast, BroadcastUpload, Recipient, RecipientIntake
from broadcasts.services import broadcast_create
from comms_platform.routing import websocket_urlpatterns
from dashboard.access import ROLES
from dashboard.roles import roles_sync
from dossiers.models import AuditLog
from tests.support.services import transactional_db

CSV = (
    b"\xef\xbb\xbfphone,first_name,code\r\n"  # 1: header, with Excel's byte-order mark
    b"+14155550101,Ann,A1\r\n"  # 2 good
    b"0123,Bob,B2\r\n"  # 3 bad number
    b",Cy,C3\r\n"  # 4 no address
    b"+1 415 555 0101,Ann again,A9\r\n"  # 5 duplicate of line 2
    b"+14155550102,,D4\r\n"  # 6 first_name empty, and the body uses it
    b"+14155550103,Eve,E5,extra\r\n"  # 7 too many columns
    b"+14155550104,Fay,F6\r\n"  # 8 good
    b"+14155550105,Gus,G7\r\n"  # 9 good
)
GOOD = ["+14155550101", "+14155550104", "+14155550105"]
BODY = "Hi {{ first_name }}, your code is {{ code }}"


@pytest.fixture
def groups(db) -> None:
    if Group.objects.filter(name__in=ROLES).count() != len(ROLES):
        roles_sync(roles=ROLES)


def person(django_user_model, role: str | None):
    user = django_user_model.objects.create_user(
        f"{role or 'nobody'}-1", password="pw-long-enough-1", is_staff=True
    )
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def sue(groups, django_user_model, client):
    """Sue is a supervisor: she may run broadcasts."""
    client.force_login(person(django_user_model, "supervisor"))
    return client


def upload(client, data: bytes = CSV, **fields):
    form = {"action": "preview", "name": "Spring sale", "channel": "sms", "body": BODY, **fields,
            "file": SimpleUploadedFile("customers.csv", data, content_type="text/csv")}  # fmt: skip
    return client.post(reverse("dashboard:broadcast-new"), form)


def token_of(response) -> str:
    return re.search(r'name="token" value="([^"]+)"', response.content.decode()).group(1)


def bad_rows(html: str) -> dict[int, str]:
    return {int(line): reason for line, reason in re.findall(
        r'<tr data-line="(\d+)"><td>\d+</td><td>[^<]*</td><td>([^<]*)</td></tr>', html)}  # fmt: skip


def test_preview_shows_the_rendered_messages_and_each_bad_row_with_its_line_and_nothing_is_created(sue):
    response = upload(sue)
    assert response.status_code == 200
    html = response.content.decode()
    assert bad_rows(html) == {
        3: "bad phone number (give it in international form, +&lt;country code&gt;…)",
        4: "missing address",
        5: "duplicate of line 2",
        6: "missing variable(s): first_name",
        7: "too many columns (4; the header has 3)",
    }
    assert 'id="cc-bc-accepted">3<' in html and 'id="cc-bc-bad-count">5<' in html
    assert "Hi Ann, your code is A1" in html and "Hi Gus, your code is G7" in html
    assert (Broadcast.objects.count(), Recipient.objects.count()) == (0, 0)  # nothing before confirm


def test_confirm_creates_the_good_recipients_once_and_a_second_confirm_creates_nothing(
    sue, django_capture_on_commit_callbacks
):
    token = token_of(upload(sue))
    assert Broadcast.objects.count() == 0
    with django_capture_on_commit_callbacks() as queued:
        response = sue.post(reverse("dashboard:broadcast-new"), {"action": "confirm", "token": token})
    broadcast = Broadcast.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "dashboard:broadcast", args=[broadcast.pk]
    )
    # The confirm answered before any recipient was inserted: the watch page says "importing".
    assert broadcast.status == "importing" and Recipient.objects.count() == 0
    assert 'id="cc-bc-importing"' in sue.get(response["Location"]).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        for callback in queued:  # the import task (eager in tests), queued by the confirm's commit
            callback()
    broadcast.refresh_from_db()
    assert broadcast.created_by.startswith("supervisor") and broadcast.status in ("running", "completed")
    assert broadcast.body == BODY and broadcast.total == 3
    assert sorted(broadcast.recipients.values_list("address", flat=True)) == GOOD
    assert broadcast.recipients.get(address=GOOD[1]).variables == {"first_name": "Fay", "code": "F6"}
    again = sue.post(reverse("dashboard:broadcast-new"), {"action": "confirm", "token": token})
    assert again.status_code == 409 and "nothing was created" in again.content.decode()
    assert (Broadcast.objects.count(), Recipient.objects.count()) == (1, 3)


def test_a_confirm_without_the_current_preview_creates_nothing(sue):
    first = token_of(upload(sue))
    upload(sue, name="Second upload")  # replaces the draft
    for token in (first, "", "forged-token"):
        response = sue.post(reverse("dashboard:broadcast-new"), {"action": "confirm", "token": token})
        assert response.status_code == 409
    assert (Broadcast.objects.count(), Recipient.objects.count()) == (0, 0)


def test_an_import_the_database_refuses_halfway_leaves_no_recipient_and_says_so(
    sue, monkeypatch, django_capture_on_commit_callbacks
):
    token = token_of(upload(sue))
    monkeypatch.setattr(bc_services, "INSERT_BATCH", 1)  # three recipient INSERTs...
    # Intake inserts through RecipientIntake (the same table, five columns: docs/broadcasts.md).
    real, calls = RecipientIntake.objects.bulk_create, []

    def failing(rows, **kwargs):  # ...and every second one fails, after the first went in
        calls.append(len(rows))
        if len(calls) % 2 == 0:
            raise DatabaseError("simulated: connection lost")
        return real(rows, **kwargs)

    monkeypatch.setattr(RecipientIntake.objects, "bulk_create", failing)
    with django_capture_on_commit_callbacks(execute=True):
        response = sue.post(reverse("dashboard:broadcast-new"), {"action": "confirm", "token": token})
    assert response.status_code == 302  # the confirm answers at once; the import task fails
    broadcast = Broadcast.objects.get()
    assert len(calls) == 2 * (1 + tasks.IMPORT_RETRIES)  # retried, every attempt rolled back
    assert broadcast.status == "failed" and broadcast.error == "the import failed: DatabaseError"
    assert Recipient.objects.count() == 0  # nothing half-created
    page = sue.get(response["Location"]).content.decode()
    assert 'id="cc-bc-error"' in page and "the import failed: DatabaseError" in page
    assert BroadcastUpload.objects.get(broadcast=broadcast).rows == 3  # the uploaded rows are kept


def test_bad_uploads_are_a_400_with_the_reason_and_create_nothing(sue):
    cases = [
        (b"name,city\r\nAnn,Paris\r\n", {}, "no address column"),
        (
            CSV,
            {"body": "Hi {{ nickname }}"},
            "the body uses nickname, but the file has no column of that name",
        ),
        (CSV, {"body": ""}, "Give a body, a template or a prompt"),
        (b"", {}, "The submitted file is empty."),
    ]
    for data, fields, message in cases:
        response = upload(sue, data, **fields)
        assert response.status_code == 400, message
        assert message in response.content.decode(), message
    assert (Broadcast.objects.count(), Recipient.objects.count()) == (0, 0)


def test_the_watch_page_shows_progress_and_pause_resume_cancel_go_through_the_services(sue):
    created = broadcast_create(name="Launch", channel="sms", body="Hello", created_by="sue",
                               recipients=[{"to": n} for n in GOOD])  # fmt: skip
    url = reverse("dashboard:broadcast", args=[created.broadcast.pk])
    html = sue.get(url).content.decode()
    assert 'data-count="accepted">3<' in html and 'data-count="pending">3<' in html
    assert 'id="cc-bc-percent">0 %<' in html and 'id="cc-bc-pause"' in html
    assert f'"/ws/broadcasts/{created.broadcast.pk}/"' in html  # the live socket
    ticket = sue.get(reverse("dashboard:live-ticket"), {"path": f"/ws/broadcasts/{created.broadcast.pk}/"})
    assert (
        ticket.status_code == 200
        and f"/ws/broadcasts/{created.broadcast.pk}/?ticket=" in ticket.json()["url"]
    )
    partial = sue.get(url, {"partial": 1}).content.decode()
    assert "<html" not in partial and 'id="cc-bc-progress"' in partial

    assert sue.post(url, {"action": "pause"}).status_code == 302
    assert Broadcast.objects.get().status == "paused"
    assert 'id="cc-bc-resume"' in sue.get(url).content.decode()
    sue.post(url, {"action": "resume"})
    assert Broadcast.objects.get().status == "running"
    sue.post(url, {"action": "cancel"})
    assert Broadcast.objects.get().status == "cancelled"
    assert set(Recipient.objects.values_list("status", flat=True)) == {"cancelled"}
    html = sue.get(url).content.decode()
    assert 'data-count="cancelled">3<' in html and 'id="cc-bc-percent">100 %<' in html
    assert 'id="cc-bc-cancel"' not in html and 'id="cc-bc-pause"' not in html
    refused = sue.post(url, {"action": "resume"}, follow=True).content.decode()  # not from cancelled
    assert "Cannot resume" in refused and Broadcast.objects.get().status == "cancelled"


def test_the_per_recipient_csv_lists_every_recipient_with_its_result(sue):
    created = broadcast_create(
        name="Launch", channel="sms", body="Hello", recipients=[{"to": n} for n in GOOD]
    )
    bc_services.broadcast_cancel(created.broadcast, actor="test")
    response = sue.get(reverse("dashboard:broadcast-recipients", args=[created.broadcast.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:4] == ["line", "address", "status", "reason"]
    assert [(r[1], r[2]) for r in rows[1:]] == [(n, "cancelled") for n in GOOD]


def test_the_list_shows_each_broadcast_with_its_progress_in_a_fixed_number_of_queries(sue):
    for n in range(3):
        broadcast_create(name=f"Wave {n}", channel="sms", body="Hello", recipients=[{"to": g} for g in GOOD])
    from django.db import connection

    with CaptureQueriesContext(connection) as three:
        html = sue.get(reverse("dashboard:broadcasts")).content.decode()
    assert all(f"Wave {n}" in html for n in range(3)) and 'id="cc-bc-new"' in html
    broadcast_create(name="Wave 3", channel="sms", body="Hello", recipients=[{"to": g} for g in GOOD])
    with CaptureQueriesContext(connection) as four:
        sue.get(reverse("dashboard:broadcasts"))
    assert len(four) == len(three)


@transactional_db  # the consumer's database_sync_to_async closes a connection held in a test's atomic block
@pytest.mark.usefixtures("in_memory_channel_layer")
def test_the_socket_pushes_progress_to_supervisors_and_refuses_an_operator(groups, django_user_model):
    created = broadcast_create(name="Launch", channel="sms", body="Hello", recipients=[{"to": g} for g in GOOD],
                               start=False)  # fmt: skip
    path = f"/ws/broadcasts/{created.broadcast.pk}/"
    supervisor, operator = person(django_user_model, "supervisor"), person(django_user_model, "operator")

    async def watch():
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
        communicator.scope["user"] = supervisor
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        # A control commits, then progress_changed is sent; the console forwards it.
        await sync_to_async(bc_services.broadcast_cancel)(created.broadcast, actor="test")
        message = await communicator.receive_json_from(timeout=10)
        await communicator.disconnect()
        return message

    assert async_to_sync(watch)() == {"type": "broadcast.progress", "broadcast_id": str(created.broadcast.pk)}

    async def refused():
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
        communicator.scope["user"] = operator
        return await communicator.connect(timeout=10)

    assert async_to_sync(refused)() == (False, 4403)


def test_an_operator_gets_403_on_every_broadcast_page_and_action_and_nothing_moves(
    groups, django_user_model, client
):
    created = broadcast_create(
        name="Launch", channel="sms", body="Hello", recipients=[{"to": g} for g in GOOD]
    )
    pk = created.broadcast.pk
    operator = person(django_user_model, "operator")
    client.force_login(operator)
    gets = [reverse("dashboard:broadcasts"), reverse("dashboard:broadcast-new"), reverse("dashboard:broadcast", args=[pk]),
            reverse("dashboard:broadcast-recipients", args=[pk]), "/admin/broadcasts/broadcast/",
            "/admin/broadcasts/recipient/"]  # fmt: skip
    for url in gets:
        assert client.get(url).status_code == 403, url
    assert upload(client).status_code == 403
    new = reverse("dashboard:broadcast-new")
    assert client.post(new, {"action": "confirm", "token": "x"}).status_code == 403
    for action in ("pause", "cancel"):
        assert client.post(reverse("dashboard:broadcast", args=[pk]), {"action": action}).status_code == 403
    ticket = client.get(reverse("dashboard:live-ticket"), {"path": f"/ws/broadcasts/{pk}/"})
    assert ticket.status_code == 403 and "broadcasts.view_broadcast" in ticket.json()["detail"]
    assert Broadcast.objects.get().status == "running" and Broadcast.objects.count() == 1
    assert set(Recipient.objects.values_list("status", flat=True)) == {"pending"}
    assert AuditLog.objects.filter(action="denied", actor=operator.username).count() >= len(gets) + 5
    # The nav offers the page only to those who may open it.
    assert "Broadcasts</a>" not in client.get(reverse("dashboard:conversations")).content.decode()


def test_the_watch_page_counts_skipped_recipients_by_reason(sue):
    created = broadcast_create(
        name="Launch", channel="sms", body="Hello", recipients=[{"to": g} for g in GOOD]
    )
    # As the engine leaves them after a batch (the messaging agent refused two, one opted out).
    Recipient.objects.filter(address__in=GOOD[:2]).update(status="skipped", reason="whatsapp window closed")
    Recipient.objects.filter(address=GOOD[2]).update(status="opted_out", reason="opted out")
    html = sue.get(reverse("dashboard:broadcast", args=[created.broadcast.pk])).content.decode()
    assert 'data-count="skipped">2<' in html and 'data-count="opted_out">1<' in html
    assert re.search(r'id="cc-bc-skipped".*<td>whatsapp window closed</td><td>2</td>', html, re.S)
    assert 'id="cc-bc-percent">100 %<' in html


def test_a_notify_upload_takes_contact_ids_and_reports_bad_ones_with_their_line(
    sue, django_capture_on_commit_callbacks
):
    from dossiers.models import Contact

    ann = Contact.objects.create(name="Ann", email="ann@example.org")
    bob = Contact.objects.create(name="Bob", phone="+14155550177")
    data = (f"contact_id,first_name\r\n{ann.id},Ann\r\nnot-an-id,X\r\n"
            f"00000000-0000-0000-0000-000000000000,Ghost\r\n{bob.id},Bob\r\n{ann.id},Ann twice\r\n").encode()  # fmt: skip
    response = upload(sue, data, channel="notify", body="Hi {{ first_name }}", subject="For {{ first_name }}")
    assert response.status_code == 200, response.content.decode()[:3000]
    html = response.content.decode()
    assert bad_rows(html) == {3: "not a contact id (a UUID)", 4: "no such contact", 6: "duplicate of line 2"}
    assert "Hi Ann" in html and "For Ann" in html  # shown as the email it would be
    with django_capture_on_commit_callbacks(execute=True):
        sue.post(reverse("dashboard:broadcast-new"), {"action": "confirm", "token": token_of(response)})
    broadcast = Broadcast.objects.get()
    assert broadcast.channel == "notify" and broadcast.subject == "For {{ first_name }}"
    assert dict(broadcast.recipients.values_list("contact_id", "line")) == {ann.id: 2, bob.id: 5}


def test_an_email_upload_needs_a_subject_and_a_prompt_upload_sends_the_previewed_text(
    sue, settings, django_capture_on_commit_callbacks
):
    from tests.fakes.openai_server import FakeOpenAI

    data = b"email,first_name\r\nAda@Example.org,Ada\r\nbob@example.org,Bob\r\n"
    refused = upload(sue, data, channel="email", body="Hi {{ first_name }}")
    assert refused.status_code == 400 and "An email broadcast needs a subject." in refused.content.decode()
    with FakeOpenAI(default_content="Hello {{ name }}, doors open at nine.") as fake:
        settings.CONTENT_SIMULATED = False
        settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = fake.api_key, fake.base_url
        data = b"email,name\r\nAda@Example.org,Ada\r\nbob@example.org,Bob\r\n"
        response = upload(sue, data, channel="email", body="", prompt="doors open at nine", subject="News")
        assert response.status_code == 200, response.content.decode()[:3000]
        html = response.content.decode()
        assert 'id="cc-bc-written"' in html and "Hello Ada, doors open at nine." in html
        with django_capture_on_commit_callbacks(execute=True):
            sue.post(reverse("dashboard:broadcast-new"), {"action": "confirm", "token": token_of(response)})
        assert len(fake.requests) == 1  # written for the preview; the confirm asked nothing more
    broadcast = Broadcast.objects.get()
    assert (
        broadcast.prompt == "doors open at nine" and broadcast.body == "Hello {{ name }}, doors open at nine."
    )
    assert broadcast.status != "writing"
    assert sorted(broadcast.recipients.values_list("address", flat=True)) == [
        "ada@example.org",
        "bob@example.org",
    ]
