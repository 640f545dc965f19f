"""The digest window on a controlled clock: items before, at and after its end; one message with
every item through the real notify routing, messaging agent and simulated Twilio."""

from __future__ import annotations

from datetime import timedelta

from dossiers.models import Email
from orchestrator import services
from orchestrator.models import Digest, RoutingRule, Task
from orchestrator.states import TaskStatus
from tests.digests.conftest import PHONE, T0, item, sent_to
from tests.support.services import transactional_db

S = TaskStatus


@transactional_db
def test_items_before_the_end_join_and_at_the_end_open_the_next_digest(clock, sms_route, ada):
    first = item(ada, "Order 1042 shipped")  # opens the window [T0, T0 + 600 s)
    clock.at(300)
    second = item(ada, "Order 1043 shipped")
    clock.at(599.999)
    last_in = item(ada, "Order 1044 shipped")
    d1 = Digest.objects.get()
    assert (d1.status, d1.item_count, d1.opens_at, d1.closes_at) == (
        "open",
        3,
        T0,
        T0 + timedelta(seconds=600),
    )
    assert sent_to(PHONE) == []  # nothing leaves before the window ends
    for task in (first, second, last_in):
        assert task.status == S.IN_PROGRESS
        assert task.result["digest"]["id"] == d1.id and task.result["digest"]["status"] == "open"

    clock.at(600)  # exactly closes_at: not in this window; it opens the next one, and d1 goes now
    at_end = item(ada, "Order 1045 shipped")
    d1.refresh_from_db()
    assert (d1.status, d1.item_count, d1.flushed_by) == ("sent", 3, "item")
    assert sent_to(PHONE) == ["3 updates:\n- Order 1042 shipped\n- Order 1043 shipped\n- Order 1044 shipped"]
    d2 = Digest.objects.get(status="open")
    assert (d2.opens_at, d2.closes_at) == (T0 + timedelta(seconds=600), T0 + timedelta(seconds=1200))
    assert at_end.result["digest"]["id"] == d2.id

    clock.at(900)
    after = item(ada, "Order 1046 shipped")
    assert after.result["digest"]["id"] == d2.id
    clock.at(1200)
    assert services.sweep_tasks().digests == 1
    assert sent_to(PHONE)[1:] == ["2 updates:\n- Order 1045 shipped\n- Order 1046 shipped"]

    # Every item is final, naming the one notify task that carried its digest.
    d1.refresh_from_db()
    d2.refresh_from_db()
    for task, digest in ((first, d1), (second, d1), (last_in, d1), (at_end, d2), (after, d2)):
        task.refresh_from_db()
        assert task.status == S.SUCCEEDED
        assert task.finished_at is not None
        assert task.result["digest"]["status"] == "sent"
        assert task.result["digest"]["task"] == str(digest.task_id)
    # The digest's one notify task, routed to SMS; it waits for the delivery callback (none in process).
    message = Task.objects.get(id=d1.task_id)
    assert (message.type, message.status, message.payload["digest_of"]) == (
        "notify", S.IN_PROGRESS, {"id": d1.id, "key": "order-updates", "items": 3}
    )  # fmt: skip
    (sms,) = Task.objects.filter(parent=message)
    assert (sms.type, sms.status) == ("sms.send", S.IN_PROGRESS) and sms.provider_id.startswith("SM")


@transactional_db
def test_keys_and_contacts_are_digested_apart(clock, sms_route, ada):
    from dossiers.models import Contact

    grace = Contact.objects.create(name="Grace", phone="+14155550148", timezone="UTC")
    item(ada, "a1")
    item(ada, "b1", key="billing")
    item(grace, "g1")
    clock.at(10)
    item(ada, "a2")
    assert Digest.objects.count() == 3
    clock.at(600)
    assert services.sweep_tasks().digests == 3
    assert sorted(sent_to(PHONE)) == ["2 updates:\n- a1\n- a2", "b1"]
    assert sent_to("+14155550148") == ["g1"]


@transactional_db
def test_email_digest_subject_counts_the_items(clock, settings, ada):
    RoutingRule.objects.all().delete()
    RoutingRule.objects.create(name="email", task_types=["notify"], channels=["email"])
    for n in range(3):
        clock.at(n)
        item(ada, f"Invoice {n} is ready", subject=f"Invoice {n}", key="invoices")
    clock.at(600)
    assert services.sweep_tasks().digests == 1
    email_task = Task.objects.get(type="email.send")
    assert email_task.payload["subject"] == "3 updates"
    assert (
        email_task.payload["text"]
        == "3 updates:\n- Invoice 0 is ready\n- Invoice 1 is ready\n- Invoice 2 is ready"
    )
    email = Email.objects.get(task_id=email_task.id)
    assert (email.subject, email.to_address) == ("3 updates", "ada@example.com")
    assert email.provider_message_id  # the simulated SendGrid accepted it


@transactional_db
def test_templates_render_the_items_and_a_single_item_goes_as_it_is(clock, sms_route, ada):
    template = {
        "body": "{{ count }} orders moved:\n{% for i in items %}#{{ i.variables.order }} {{ i }}\n{% endfor %}"
    }
    item(ada, "shipped", key="t", variables={"order": "1042"}, digest=template)
    clock.at(1)
    item(ada, "delivered", key="t", variables={"order": "1043"}, digest=template)
    item(ada, "Your code is 1234", key="single")
    clock.at(601)
    assert services.sweep_tasks().digests == 2
    assert sorted(sent_to(PHONE)) == sorted(
        ["2 orders moved:\n#1042 shipped\n#1043 delivered", "Your code is 1234"]
    )


@transactional_db
def test_cancelled_items_are_left_out_and_an_all_cancelled_digest_sends_nothing(clock, sms_route, ada):
    keep = item(ada, "keep me")
    drop = item(ada, "drop me")
    services.task_cancel(task_id=drop.id, actor="test", reason="changed my mind")
    lonely = item(ada, "never sent", key="other")
    services.task_cancel(task_id=lonely.id, actor="test")
    clock.at(600)
    assert services.sweep_tasks().digests == 1
    assert sent_to(PHONE) == ["keep me"]
    assert Digest.objects.get(key="other").status == "empty"
    keep.refresh_from_db()
    drop.refresh_from_db()
    assert (keep.status, drop.status) == (S.SUCCEEDED, S.CANCELLED)


@transactional_db
def test_no_enabled_notify_agent_fails_every_item_with_the_reason(clock, sms_route, ada):
    from orchestrator import registry
    from orchestrator.models import AgentRegistration

    first = item(ada, "one")
    AgentRegistration.objects.filter(task_type="notify").update(enabled=False)
    registry.invalidate()
    clock.at(600)
    assert services.digests_flush_due() == 0
    first.refresh_from_db()
    assert (first.status, first.error_code) == (S.FAILED, "digest_not_sent")
    assert "no enabled agent for notify" in first.error_message
    assert Digest.objects.get().status == "failed"


@transactional_db
def test_a_scheduled_item_arrives_when_it_is_due(clock, sms_route, ada):
    from datetime import timedelta

    task, _ = services.task_create(type="notify", contact_id=ada.id, scheduled_for=T0 + timedelta(seconds=3600),
                                   payload={"body": "later", "digest": {"key": "k", "window_seconds": 600}})  # fmt: skip
    clock.at(3600)
    services.sweep_tasks()  # sends it once it is due
    digest = Digest.objects.get()
    assert (digest.opens_at, digest.closes_at) == (T0 + timedelta(seconds=3600), T0 + timedelta(seconds=4200))
    task.refresh_from_db()
    assert (task.status, task.result["digest"]["id"]) == (S.IN_PROGRESS, digest.id)
    assert sent_to(PHONE) == []
