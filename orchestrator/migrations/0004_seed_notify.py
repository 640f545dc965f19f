"""The notify task type (routed by RoutingRule rows) and a default rule."""

import datetime

from django.db import migrations


def seed(apps, schema_editor):
    AgentRegistration = apps.get_model("orchestrator", "AgentRegistration")
    RoutingRule = apps.get_model("orchestrator", "RoutingRule")
    AgentRegistration.objects.update_or_create(
        task_type="notify",
        defaults={
            "agent": "orchestrator",
            "channel": "any",
            "kind": "in_process",
            "queue": "orchestrator",
            "handler": "orchestrator.routing.handle_notify",
            "description": "Picks channels by routing rule, consent and quiet hours; falls back channel by channel.",
        },
    )
    RoutingRule.objects.get_or_create(
        name="default",
        defaults={
            "position": 1000,
            "task_types": ["notify"],
            "channels": ["whatsapp", "sms", "email"],
            "channel_timeout_seconds": 900,
            "quiet_start": datetime.time(21, 0),
            "quiet_end": datetime.time(8, 0),
        },
    )


def unseed(apps, schema_editor):
    apps.get_model("orchestrator", "AgentRegistration").objects.filter(task_type="notify").delete()
    apps.get_model("orchestrator", "RoutingRule").objects.filter(name="default").delete()


class Migration(migrations.Migration):
    dependencies = [("orchestrator", "0003_routingrule")]

    operations = [migrations.RunPython(seed, unseed)]
