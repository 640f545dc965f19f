"""Issue 19's gaps, API and services side: email templates in broadcasts (and notify recipients
routed to email), email addresses matched case-insensitively, the body written from a prompt by
a task (once, whatever is retried), and the console's upload imported by a task (idempotent,
nothing half-created). Emails go to a real local SMTP server, SMS to the fake Twilio, the
prompt to a local OpenAI-compatible server through the real ``openai`` SDK."""

from __future__ import annotations

import pytest

from broadcasts import tasks
from broadcasts.csvimport import parse_recipients_csv
from broadcasts.models import Broadcast, BroadcastUpload, Recipient, RecipientStatus
from broadcasts.services import broadcast_cancel, broadcast_create
from dossiers.models import Contact
from orchestrator.models import RoutingRule
from tests.broadcasts.test_channels import smtp  # noqa: F401  (the fixture)
from tests.fakes.openai_server import FakeOpenAI, Reply

pytestmark = pytest.mark.django_db
R = RecipientStatus


@pytest.fixture
def openai_fake(settings):
    with FakeOpenAI(default_content="Hi {{ name }}, the shop opens on Sunday.") as fake:
        settings.CONTENT_SIMULATED = False
        settings.OPENAI_API_KEY = fake.api_key
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_MODEL = "test-model-1"
        settings.OPENAI_TIMEOUT_SECONDS = 5.0
        yield fake


def _post(api, body: dict, **headers):
    return api.post("/api/broadcasts/", body, content_type="application/json", **headers)


# --- email templates ----------------------------------------------------------------------------


def test_an_email_template_is_rendered_per_recipient_with_its_variables(
    api,
    smtp,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    people = [{"to": "ada@example.org", "variables": {"name": "Ada", "message": "Your order <#1> shipped."}},
              {"to": "bob@example.org", "variables": {"name": "Bob", "message": "Your order #2 shipped.",
                                                      "action_url": "https://shop.example.org/2"}}]  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(api, {"name": "orders", "channel": "email", "subject": "Order news for {{ name }}",
                               "template": "notification", "recipients": people})  # fmt: skip
    assert response.status_code == 201, response.content
    assert response.json()["template"] == "notification"
    messages = {m["To"]: m for m in smtp.messages()}
    assert sorted(messages) == ["ada@example.org", "bob@example.org"]
    ada, bob = messages["ada@example.org"], messages["bob@example.org"]
    assert ada["Subject"] == "Order news for Ada"
    # templates/email/notification.txt and .html, with the recipient's variables (escaped in HTML)
    assert (
        ada.get_body(("plain",)).get_content().replace("\r\n", "\n").strip()
        == "Hi Ada,\n\nYour order <#1> shipped."
    )
    html = ada.get_body(("html",)).get_content()
    assert "<p>Hi Ada,</p>" in html and "Your order &lt;#1&gt; shipped." in html and "href" not in html
    assert 'href="https://shop.example.org/2"' in bob.get_body(("html",)).get_content()
    broadcast = Broadcast.objects.get(pk=response.json()["id"])
    assert set(broadcast.recipients.values_list("status", flat=True)) == {R.SENT}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"template": "no-such-template"}, "template"),
        ({"template": "../admin/base"}, "template"),
        ({"template": "notification", "html": "<p>{{ name }}</p>"}, "html"),
    ],
)
def test_an_unknown_email_template_is_a_400_naming_template(api, extra, field):
    response = _post(api, {"name": "t", "channel": "email", "subject": "S",
                           "recipients": [{"to": "a@example.org"}], **extra})  # fmt: skip
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert Broadcast.objects.count() == 0


def test_notify_recipients_routed_to_email_get_the_email_template(
    smtp,  # noqa: F811
    fake_twilio,
    django_capture_on_commit_callbacks,
):
    RoutingRule.objects.create(
        name="email first", position=1, task_types=["notify"], channels=["email", "sms"]
    )
    mail = Contact.objects.create(name="Mail", email="mail@example.org")
    phone = Contact.objects.create(name="Phone", phone="+14155550131")
    with django_capture_on_commit_callbacks(execute=True):
        created = broadcast_create(
            name="n", channel="notify", subject="For {{ name }}", template="notification",
            recipients=[{"contact_id": str(c.id), "variables": {"name": c.name, "message": "Doors open at 9."}}
                        for c in (mail, phone)],
        )  # fmt: skip
    [email] = smtp.messages()
    assert (email["To"], email["Subject"]) == ("mail@example.org", "For Mail")
    assert "Doors open at 9." in email.get_body(("html",)).get_content()
    # Routed to SMS: there is no messaging template of that name, so the email template's text part.
    assert [(p.form["To"][0], p.form["Body"][0]) for p in fake_twilio.posts()] == [
        ("+14155550131", "Hi Phone,\n\nDoors open at 9.")
    ]
    rows = {r.contact_id: r for r in Recipient.objects.filter(broadcast=created.broadcast)}
    assert (rows[mail.id].channel, rows[phone.id].channel) == ("email", "sms")


# --- email addresses are matched case-insensitively ---------------------------------------------


def test_email_recipients_link_to_their_contact_and_dedupe_whatever_the_case(api):
    ada = Contact.objects.create(name="Ada", email="Ada@Example.org")  # stored as typed in the admin
    response = _post(api, {"name": "c", "channel": "email", "subject": "S", "body": "B", "recipients": [
        {"to": "ada@example.org"}, {"to": "ADA@EXAMPLE.ORG"}, {"to": "Grace@Example.org"}]})  # fmt: skip
    assert response.status_code == 201, response.content
    assert response.json()["rejected"] == [{"line": 2, "address": "ada@example.org", "reason": "duplicate"}]
    rows = dict(Recipient.objects.values_list("address", "contact_id"))
    assert rows == {"ada@example.org": ada.id, "grace@example.org": None}


def test_the_csv_upload_dedupes_email_addresses_whatever_the_case():
    parsed = parse_recipients_csv(
        b"email,name\r\nAda@Example.org,Ada\r\nada@example.ORG,Again\r\n", channel="email"
    )
    assert [r["to"] for r in parsed.recipients] == ["ada@example.org"]
    assert parsed.rejected == [{"line": 3, "address": "ada@example.ORG", "reason": "duplicate of line 2"}]


# --- the body written from a prompt, by a task, once ----------------------------------------------


def test_a_prompt_broadcast_answers_writing_and_the_model_is_asked_once_whatever_is_retried(
    api, openai_fake, fake_twilio, django_capture_on_commit_callbacks
):
    body = {"name": "p", "channel": "sms", "prompt": "tell them the shop opens on Sunday",
            "recipients": [{"to": f"+1415555{500 + i:04d}", "variables": {"name": f"P{i}"}} for i in range(3)]}  # fmt: skip
    with django_capture_on_commit_callbacks() as queued:
        first = _post(api, body, HTTP_IDEMPOTENCY_KEY="prompt-1")
    assert first.status_code == 201 and first.json()["status"] == "writing"
    assert openai_fake.requests == []  # the request did not wait for the model
    again = _post(api, body, HTTP_IDEMPOTENCY_KEY="prompt-1")  # a client retry after a timeout
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert openai_fake.requests == []
    bid = first.json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        for callback in queued:  # the write_body task (and, once written, the first batches)
            callback()
        assert tasks.write_body.apply(args=[bid]).get() == "nothing to write"  # run twice
    assert len(openai_fake.requests) == 1
    broadcast = Broadcast.objects.get(pk=bid)
    assert broadcast.body == "Hi {{ name }}, the shop opens on Sunday." and broadcast.status == "completed"
    assert sorted(p.form["Body"][0] for p in fake_twilio.posts()) == [
        f"Hi P{i}, the shop opens on Sunday." for i in range(3)
    ]
    assert api.get(f"/api/broadcasts/{bid}/").json()["progress"]["sent"] == 3


def test_a_content_agent_refusal_fails_the_broadcast_with_the_reason_in_api_and_console(
    api, admin_client, openai_fake, fake_twilio, django_capture_on_commit_callbacks
):
    openai_fake.script(Reply(status=400, content="", headers={}))
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(api, {"name": "p", "channel": "sms", "prompt": "write something",
                               "recipients": [{"to": "+14155550601", "variables": {"name": "A"}}]})  # fmt: skip
    assert response.status_code == 201
    bid = response.json()["id"]
    shown = api.get(f"/api/broadcasts/{bid}/").json()
    assert shown["status"] == "failed" and shown["error"].startswith(
        "the content agent could not write a body"
    )
    assert shown["progress"]["skipped"] == 1 and fake_twilio.posts() == []
    assert len(openai_fake.requests) == 1  # a permanent refusal is not asked again
    page = admin_client.get(f"/admin/broadcasts/{bid}/").content.decode()
    assert 'id="cc-bc-error"' in page and "the content agent could not write a body" in page


# --- the console's upload, imported by a task ---------------------------------------------------


def test_the_import_task_inserts_once_and_keeps_the_rows_it_refused(django_capture_on_commit_callbacks):
    people = [
        {"to": f"+1415555{700 + i:04d}", "variables": {"name": f"P{i}"}, "line": i + 2} for i in range(4)
    ]
    people.append({"to": "+14155550700", "variables": {"name": "dup"}, "line": 9})
    with django_capture_on_commit_callbacks() as queued:
        created = broadcast_create(name="u", channel="sms", body="Hi {{ name }}", recipients=people,
                                   defer_intake=True, start=False)  # fmt: skip
    broadcast = created.broadcast
    assert broadcast.status == "importing" and Recipient.objects.count() == 0 and len(queued) == 1
    assert BroadcastUpload.objects.get(broadcast=broadcast).rows == 5
    assert tasks.import_recipients.apply(args=[str(broadcast.id)]).get() == "imported"
    assert tasks.import_recipients.apply(args=[str(broadcast.id)]).get() == "nothing to import"  # redelivered
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.total, broadcast.rejected) == ("draft", 4, 1)
    assert sorted(Recipient.objects.values_list("line", flat=True)) == [2, 3, 4, 5]
    upload = BroadcastUpload.objects.get(broadcast=broadcast)
    assert bytes(upload.data) == b"" and upload.imported_at is not None
    assert upload.rejected == [{"line": 9, "address": "+14155550700", "reason": "duplicate"}]


def test_an_import_with_no_valid_recipient_fails_with_the_reason_and_no_recipient():
    created = broadcast_create(name="u", channel="email", subject="S", body="B", defer_intake=True,
                               recipients=[{"to": "nope", "line": 2}, {"to": "", "line": 3}])  # fmt: skip
    assert tasks.import_recipients.apply(args=[str(created.broadcast.id)]).get() == "failed"
    broadcast = Broadcast.objects.get()
    assert broadcast.status == "failed" and broadcast.error == "no valid recipient (2 rows refused)"
    assert Recipient.objects.count() == 0
    upload = BroadcastUpload.objects.get(broadcast=broadcast)
    assert [r["line"] for r in upload.rejected] == [2, 3]
    assert bytes(upload.data) == b""  # never to be imported: the uploaded rows are not kept


def test_a_broadcast_cancelled_while_importing_keeps_no_uploaded_rows():
    created = broadcast_create(name="u", channel="sms", body="Hi", defer_intake=True, start=False,
                               recipients=[{"to": "+14155550701", "line": 2}])  # fmt: skip
    assert bytes(BroadcastUpload.objects.get(broadcast=created.broadcast).data) != b""
    broadcast_cancel(created.broadcast, actor="test")
    assert bytes(BroadcastUpload.objects.get(broadcast=created.broadcast).data) == b""
    assert tasks.import_recipients.apply(args=[str(created.broadcast.id)]).get() == "nothing to import"
    assert Recipient.objects.count() == 0
