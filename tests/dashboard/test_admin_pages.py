"""Task list and page, contact page: what an operator sees, and bounded queries."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from dossiers.models import Artifact, Call, Contact, Email, Message, TranscriptTurn
from dossiers.services import artifact_store, consent_set
from orchestrator.models import Task
from orchestrator.services import NotRetryable, task_create, task_fail, task_retry, task_transition

pytestmark = pytest.mark.usefixtures("console_types")


def make_tasks(n: int) -> list[Task]:
    tasks = []
    first = Contact.objects.count()  # contacts are unique by phone and email
    for i in range(first, first + n):
        contact = Contact.objects.create(
            name=f"Person {i}", phone=f"+1415555{i:04d}", email=f"p{i}@example.com"
        )
        task, _ = task_create(type="sms.send" if i % 2 else "email.send", payload={"to": contact.phone},
                              contact_id=contact.pk, correlation_id=f"corr-{i}")  # fmt: skip
        tasks.append(task)
    Task.objects.filter(pk__in=[t.pk for t in tasks]).update(status="in_progress")  # as if dispatched
    return tasks


def test_task_list_shows_operator_columns_in_bounded_queries(staff_client, django_assert_max_num_queries):
    make_tasks(5)
    with django_assert_max_num_queries(14) as few:
        staff_client.get(reverse("admin:orchestrator_task_changelist"))
    baseline = len(few.captured_queries)  # read now: the next request resets Django's query log
    make_tasks(30)
    with django_assert_max_num_queries(baseline):  # no query per row
        page = staff_client.get(reverse("admin:orchestrator_task_changelist"))
    html = page.content.decode()
    assert 'class="cc-chan cc-chan-sms"' in html and 'class="cc-chan cc-chan-email"' in html
    assert 'class="cc-badge cc-busy">in progress' in html
    assert 'class="cc-avatar"' in html and "Person 7" in html


def test_task_list_filters_by_channel_and_searches_phone_and_correlation(staff_client):
    tasks = make_tasks(4)
    url = reverse("admin:orchestrator_task_changelist")
    sms_only = staff_client.get(url, {"channel__exact": "sms"}).content.decode()
    assert "cc-chan-sms" in sms_only and "cc-chan-email" not in sms_only
    by_phone = staff_client.get(url, {"q": "+14155550003"}).context["cl"].result_list
    assert [t.pk for t in by_phone] == [tasks[3].pk]
    by_corr = staff_client.get(url, {"q": "corr-2"}).context["cl"].result_list
    assert [t.pk for t in by_corr] == [tasks[2].pk]


def test_task_page_shows_events_provider_ids_error_chain_and_artifacts(staff_client, ada):
    parent, _ = task_create(type="email.send", payload={"to": ada.email}, contact_id=ada.pk)
    child, _ = task_create(type="sms.send", payload={"to": ada.phone}, contact_id=ada.pk, parent_id=parent.pk)
    Task.objects.filter(pk=parent.pk).update(result={"chain": {"attempts": [
        {"channel": "email", "task": str(parent.pk), "status": "failed", "reason": "bounced"},
        {"channel": "sms", "task": str(child.pk), "status": "in_progress"},
    ]}}, status="in_progress")  # fmt: skip
    task_fail(task_id=parent.pk, code="bounce", message="550 mailbox unavailable", actor="webhook")
    Message.objects.create(task=parent, contact=ada, channel="sms", direction="outbound", from_address="+1",
                           to_address=ada.phone, provider_sid="SM" + "b" * 32, occurred_at=timezone.now())  # fmt: skip
    artifact_store(content=b"<p>Hi <b>Ada</b></p><script>alert(1)</script>", content_type="text/html",
                   kind="html", task_id=parent.pk)  # fmt: skip
    artifact_store(content=b"plain words", content_type="text/plain", kind="text", task_id=parent.pk)
    audio = artifact_store(content=b"RIFF....", content_type="audio/wav", kind="recording", task_id=parent.pk)

    html = staff_client.get(reverse("admin:orchestrator_task_change", args=[parent.pk])).content.decode()

    assert "in_progress → failed" in html and "550 mailbox unavailable" in html
    assert "SM" + "b" * 32 in html
    assert "bounced" in html and str(child.pk) in html
    assert '<iframe class="cc-iframe" sandbox=""' in html and "&lt;script&gt;" in html
    assert "plain words" in html
    audio_src = html.split('<audio controls preload="none" src="')[1].split('"')[0]
    served = staff_client.get(audio_src)
    assert served.status_code == 200 and b"".join(served.streaming_content) == b"RIFF...."
    assert served["Content-Security-Policy"].startswith("sandbox;")
    assert Artifact.objects.filter(pk=audio.pk).exists()


def test_artifact_link_refuses_a_forged_token(staff_client):
    assert staff_client.get(reverse("artifact", args=["forged.token"])).status_code == 404


def test_task_page_shows_an_artifact_whose_file_is_gone_as_unavailable(staff_client, ada):
    from django.core.files.storage import default_storage

    task, _ = task_create(type="email.send", payload={"to": ada.email}, contact_id=ada.pk)
    gone = artifact_store(content=b"RIFF....", content_type="audio/wav", kind="recording", task_id=task.pk)
    default_storage.delete(gone.storage_key)

    response = staff_client.get(reverse("admin:orchestrator_task_change", args=[task.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "unavailable" in html and "no longer in storage" in html and "<audio" not in html


def test_retry_creates_a_new_task_pointing_at_the_failed_one(staff_client, ada):
    task, _ = task_create(type="sms.send", payload={"to": ada.phone, "body": "x"}, contact_id=ada.pk)
    task_fail(task_id=task.pk, code="unreachable", message="no route", actor="agent")

    response = staff_client.post(reverse("admin:orchestrator_task_retry", args=[task.pk]))

    new = Task.objects.get(parent=task)
    assert response.status_code == 302 and str(new.pk) in response["Location"]
    assert (new.type, new.payload, new.contact_id) == (task.type, task.payload, ada.pk)
    assert Task.objects.get(pk=task.pk).status == "failed"  # history untouched


def test_retry_refuses_an_unfinished_or_successful_task(ada):
    task, _ = task_create(type="sms.send", payload={"to": ada.phone}, contact_id=ada.pk)
    with pytest.raises(NotRetryable):
        task_retry(task_id=task.pk, actor="t")
    Task.objects.filter(pk=task.pk).update(status="in_progress")
    task_transition(task_id=task.pk, to="succeeded", actor="webhook")
    with pytest.raises(NotRetryable):
        task_retry(task_id=task.pk, actor="t")


def test_cancel_from_the_task_page(staff_client, ada):
    task, _ = task_create(type="sms.send", payload={"to": ada.phone}, contact_id=ada.pk)
    staff_client.post(reverse("admin:orchestrator_task_cancel", args=[task.pk]))
    task.refresh_from_db()
    assert task.status == "cancelled" and task.events.filter(actor="operator:olivia").exists()


def test_contact_page_shows_consent_history_and_timeline_newest_first(staff_client, ada,
                                                                      django_assert_max_num_queries):  # fmt: skip
    now = timezone.now()
    consent_set(contact_id=ada.pk, channel="sms", status="opted_in", source="api")
    consent_set(contact_id=ada.pk, channel="sms", status="opted_out", source="keyword", detail="STOP")
    Message.objects.create(contact=ada, channel="sms", direction="inbound", from_address=ada.phone,
                           to_address="+1", body="older message", occurred_at=now.replace(year=now.year - 1))  # fmt: skip
    Email.objects.create(contact=ada, from_address="a@b.c", to_address=ada.email, subject="newest email",
                         occurred_at=now)  # fmt: skip
    call = Call.objects.create(contact=ada, from_address="+1", to_address=ada.phone, status="completed",
                               duration_seconds=42, occurred_at=now.replace(month=1, day=1))  # fmt: skip
    TranscriptTurn.objects.create(call=call, sequence=1, speaker="agent", text="hi", started_at=now)

    with django_assert_max_num_queries(20):
        html = staff_client.get(reverse("admin:dossiers_contact_change", args=[ada.pk])).content.decode()

    assert "opted_out" in html and "keyword: STOP" in html
    dossier = html[html.index('id="cc-dossier"') :]
    assert dossier.index("newest email") < dossier.index("42s") < dossier.index("older message")
    assert 'class="cc-avatar"' in html and ">AL<" in html
