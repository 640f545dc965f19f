"""The old inbox's rows become conversations, then its tables go: the console's InboxItem rows
fold into one conversation per contact and channel (open items open with their claimer,
resolved ones resolved, conversations 0002), the messaging agent's InboundItem rows no
conversation holds yet join theirs in the final copy (conversations 0003), operator profiles
become operators — and dashboard 0004 / messaging 0004 drop the old models. Run through the
migration executor: back to before the copy, old rows written with the historical models,
then forward to the latest state."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from conversations.models import Conversation, ConversationTask, Operator
from dossiers.models import Contact, Message
from orchestrator.models import Task
from tests.dashboard.conftest import register_console_types
from tests.support.services import transactional_db

BEFORE = [
    ("conversations", "0001_initial"),
    ("dashboard", "0003_h16a_roles"),
    ("messaging", "0003_h15_sendattempt_abandoned"),
]


def _inbound_task(contact_id: int, body: str, channel: str = "sms"):
    # The orchestrator is not migrated back: its current model writes its current table.
    return Task.objects.create(type=f"{channel}.inbound", channel=channel, status="in_progress",
                               contact_id=contact_id, payload={"body": body})  # fmt: skip


@transactional_db
def test_old_inbox_rows_become_conversations_and_the_old_tables_go(django_user_model):
    register_console_types()
    olivia = django_user_model.objects.create_user("olivia", password="pw-olivia-123", is_staff=True)
    ada = Contact.objects.create(name="Ada", phone="+14155550101")
    grace = Contact.objects.create(name="Grace", phone="+14155550102")
    alan = Contact.objects.create(name="Alan", phone="+14155550103", whatsapp="whatsapp:+14155550103")
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        _old_rows_then_forward(executor, olivia, ada, grace, alan)
    finally:  # never leave the test database half migrated for the tests after this one
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def _old_rows_then_forward(executor, olivia, ada, grace, alan) -> None:
    apps = executor.loader.project_state(BEFORE).apps
    InboxItem = apps.get_model("dashboard", "InboxItem")
    OperatorProfile = apps.get_model("dashboard", "OperatorProfile")
    InboundItem = apps.get_model("messaging", "InboundItem")
    now = timezone.now()
    old, new = _inbound_task(ada.pk, "first"), _inbound_task(ada.pk, "second")  # one thread
    done = _inbound_task(grace.pk, "thanks")
    late = _inbound_task(alan.pk, "hola", channel="whatsapp")  # only the agent's list has it
    InboxItem.objects.create(task_id=old.pk, received_at=now - timedelta(minutes=5), claimed_by_id=olivia.pk,
                             claimed_at=now)  # fmt: skip
    InboxItem.objects.create(task_id=new.pk, received_at=now - timedelta(minutes=1))
    InboxItem.objects.create(task_id=done.pk, received_at=now - timedelta(hours=1), resolved_at=now)
    message = Message.objects.create(contact_id=alan.pk, task_id=late.pk, channel="whatsapp", direction="inbound",
                                     from_address=alan.whatsapp, to_address="+14155550000", body="hola",
                                     occurred_at=now - timedelta(minutes=2))  # fmt: skip
    InboundItem.objects.create(task_id=late.pk, message_id=message.pk, contact_id=alan.pk, channel="whatsapp",
                               received_at=now - timedelta(minutes=2), claimed_by="olivia", status="claimed")  # fmt: skip
    OperatorProfile.objects.create(user_id=olivia.pk, online=True, capacity=3)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    ada_conv = Conversation.objects.get(contact=ada, channel="sms")
    assert (ada_conv.status, ada_conv.assignee, ada_conv.unread) == ("open", olivia, 2)
    assert ada_conv.waiting_since == now - timedelta(minutes=5)
    assert set(ada_conv.held_tasks.values_list("task_id", flat=True)) == {old.pk, new.pk}
    grace_conv = Conversation.objects.get(contact=grace)
    assert grace_conv.status == "resolved" and ConversationTask.objects.get(task_id=done.pk).finished
    alan_conv = Conversation.objects.get(contact=alan, channel="whatsapp")  # the final copy (0003)
    assert (alan_conv.status, alan_conv.assignee, alan_conv.unread) == ("open", olivia, 1)
    assert not ConversationTask.objects.get(task_id=late.pk).finished
    operator = Operator.objects.get(user=olivia)
    assert (operator.available, operator.capacity) == (True, 3)
    tables = connection.introspection.table_names()
    assert "dashboard_inboxitem" not in tables and "dashboard_operatorprofile" not in tables
    assert "messaging_inbounditem" not in tables
