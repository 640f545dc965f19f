"""The data migration folds the console's InboxItem rows into conversations (one per contact
and channel, open items open with their claimer, resolved ones resolved) and operator
profiles into operators."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from conversations.models import Conversation, ConversationTask, Operator
from dashboard.models import InboxItem, OperatorProfile
from dossiers.models import Contact
from tests.dashboard.conftest import inbound, register_console_types

pytestmark = pytest.mark.django_db
migration = importlib.import_module("conversations.migrations.0002_from_inbox_items")


def test_inbox_items_become_conversations(django_user_model):
    register_console_types()
    olivia = django_user_model.objects.create_user("olivia", password="pw-olivia-123", is_staff=True)
    ada = Contact.objects.create(name="Ada", phone="+14155550101")
    grace = Contact.objects.create(name="Grace", phone="+14155550102")
    old, new = inbound(ada, "first"), inbound(ada, "second")  # one thread: one conversation
    done = inbound(grace, "thanks")
    now = timezone.now()
    InboxItem.objects.create(
        task=old, received_at=now - timedelta(minutes=5), claimed_by=olivia, claimed_at=now
    )
    InboxItem.objects.create(task=new, received_at=now - timedelta(minutes=1))
    InboxItem.objects.create(task=done, received_at=now - timedelta(hours=1), resolved_at=now)
    OperatorProfile.objects.create(user=olivia, online=True, capacity=3)

    migration.forward(apps, None)

    ada_conv = Conversation.objects.get(contact=ada, channel="sms")
    assert (ada_conv.status, ada_conv.assignee, ada_conv.unread) == ("open", olivia, 2)
    assert ada_conv.waiting_since == now - timedelta(minutes=5)
    assert set(ada_conv.held_tasks.values_list("task_id", flat=True)) == {old.pk, new.pk}
    grace_conv = Conversation.objects.get(contact=grace)
    assert grace_conv.status == "resolved" and ConversationTask.objects.get(task=done).finished
    operator = Operator.objects.get(user=olivia)
    assert (operator.available, operator.capacity) == (True, 3)
