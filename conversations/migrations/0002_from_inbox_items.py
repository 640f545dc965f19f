"""Existing inbox state becomes conversations: the console's InboxItem rows (one per inbound
task) fold into one conversation per contact and channel, holding their inbound tasks; the
console's operator profiles become operators' availability."""

from django.db import migrations

INBOUND = {"sms.inbound": "sms", "whatsapp.inbound": "whatsapp"}


def forward(apps, schema_editor):
    InboxItem = apps.get_model("dashboard", "InboxItem")
    OperatorProfile = apps.get_model("dashboard", "OperatorProfile")
    Conversation = apps.get_model("conversations", "Conversation")
    ConversationTask = apps.get_model("conversations", "ConversationTask")
    Operator = apps.get_model("conversations", "Operator")
    for item in (
        InboxItem.objects.filter(task__contact__isnull=False, task__type__in=list(INBOUND))
        .select_related("task")
        .order_by("received_at")
        .iterator()
    ):
        task = item.task
        conv, _ = Conversation.objects.get_or_create(contact_id=task.contact_id, channel=INBOUND[task.type])
        open_ = item.resolved_at is None
        if open_:
            conv.status, conv.resolved_at = "open", None
            conv.unread += 1
            conv.waiting_since = conv.waiting_since or item.received_at
            if item.claimed_by_id:
                conv.assignee_id, conv.assigned_at = item.claimed_by_id, item.claimed_at
        elif conv.waiting_since is None:
            conv.status, conv.resolved_at = "resolved", item.resolved_at
        conv.first_customer_message_at = conv.first_customer_message_at or item.received_at
        conv.last_customer_message_at = item.received_at
        conv.save()
        ConversationTask.objects.get_or_create(
            task_id=task.pk, defaults={"conversation": conv, "finished": not open_}
        )
    for profile in OperatorProfile.objects.all():
        Operator.objects.get_or_create(
            user_id=profile.user_id,
            defaults={"available": profile.online, "capacity": profile.capacity,
                      "last_assigned_at": profile.last_assigned_at},
        )  # fmt: skip


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0001_initial"),
        ("dashboard", "0003_h16a_roles"),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
