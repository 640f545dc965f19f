"""The final copy before the old inbox's tables go (dashboard 0004, messaging 0004): inbound
tasks an InboxItem or a messaging InboundItem still lists and no conversation holds yet join
their contact's conversation (open ones open, with their claimer); operator profiles not yet
copied become operators. Idempotent: what 0002 or the live receivers copied is skipped."""

from django.conf import settings
from django.db import migrations

INBOUND = {"sms.inbound": "sms", "whatsapp.inbound": "whatsapp"}


def _join(Conversation, ConversationTask, *, task, received_at, open_, claimer_id=None, claimed_at=None,
          resolved_at=None):  # fmt: skip
    conv, _ = Conversation.objects.get_or_create(contact_id=task.contact_id, channel=INBOUND[task.type])
    if open_:
        conv.status, conv.resolved_at, conv.snoozed_until = "open", None, None
        conv.unread += 1
        conv.waiting_since = conv.waiting_since or received_at
        if claimer_id and conv.assignee_id is None:
            conv.assignee_id, conv.assigned_at = claimer_id, claimed_at
    elif conv.waiting_since is None and conv.status != "open":
        conv.status, conv.resolved_at = "resolved", resolved_at or received_at
    conv.first_customer_message_at = conv.first_customer_message_at or received_at
    if conv.last_customer_message_at is None or conv.last_customer_message_at < received_at:
        conv.last_customer_message_at = received_at
    conv.save()
    ConversationTask.objects.get_or_create(
        task_id=task.pk, defaults={"conversation": conv, "finished": not open_}
    )


def forward(apps, schema_editor):
    InboxItem = apps.get_model("dashboard", "InboxItem")
    OperatorProfile = apps.get_model("dashboard", "OperatorProfile")
    InboundItem = apps.get_model("messaging", "InboundItem")
    Conversation = apps.get_model("conversations", "Conversation")
    ConversationTask = apps.get_model("conversations", "ConversationTask")
    Operator = apps.get_model("conversations", "Operator")
    User = apps.get_model(settings.AUTH_USER_MODEL)
    held = ConversationTask.objects.values("task_id")
    for item in (
        InboxItem.objects.filter(task__contact__isnull=False, task__type__in=list(INBOUND))
        .exclude(task_id__in=held)
        .select_related("task")
        .order_by("received_at")
        .iterator()
    ):
        _join(Conversation, ConversationTask, task=item.task, received_at=item.received_at,
              open_=item.resolved_at is None, claimer_id=item.claimed_by_id, claimed_at=item.claimed_at,
              resolved_at=item.resolved_at)  # fmt: skip
    for item in (
        InboundItem.objects.filter(task__contact__isnull=False, task__type__in=list(INBOUND))
        .exclude(task_id__in=held)
        .exclude(task__contact__synthetic=True)
        .select_related("task")
        .order_by("received_at")
        .iterator()
    ):
        claimer = User.objects.filter(username=item.claimed_by).values_list("pk", flat=True).first()
        _join(Conversation, ConversationTask, task=item.task, received_at=item.received_at,
              open_=item.status != "done", claimer_id=claimer,
              claimed_at=item.updated_at if claimer else None)  # fmt: skip
    for profile in OperatorProfile.objects.all():
        Operator.objects.get_or_create(
            user_id=profile.user_id,
            defaults={"available": profile.online, "capacity": profile.capacity,
                      "last_assigned_at": profile.last_assigned_at},
        )  # fmt: skip


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0002_from_inbox_items"),
        ("dashboard", "0003_h16a_roles"),
        ("messaging", "0003_h15_sendattempt_abandoned"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]
    run_before = [
        ("dashboard", "0004_retire_old_inbox"),
        ("messaging", "0004_retire_inbound_item"),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
