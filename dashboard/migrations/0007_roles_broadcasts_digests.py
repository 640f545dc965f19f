"""Merge of the broadcasts' and the digests' role migrations: a frozen copy of
dashboard.access.ROLES with both (`manage.py sync_roles` brings a database up to date)."""

from django.db import migrations

ROLES = {
    "admin": [
        "auth.add_user",
        "auth.change_user",
        "auth.view_group",
        "auth.view_user",
        "broadcasts.add_broadcast",
        "broadcasts.change_broadcast",
        "broadcasts.view_broadcast",
        "broadcasts.view_recipient",
        "dashboard.add_cannedresponse",
        "dashboard.add_operatorprofile",
        "dashboard.change_cannedresponse",
        "dashboard.change_operatorprofile",
        "dashboard.delete_cannedresponse",
        "dashboard.operate_tasks",
        "dashboard.supervise",
        "dashboard.use_console",
        "dashboard.view_cannedresponse",
        "dashboard.view_inboxitem",
        "dashboard.view_operations",
        "dashboard.view_operatorprofile",
        "dashboard.work_inbox",
        "dossiers.add_contact",
        "dossiers.change_contact",
        "dossiers.delete_contact",
        "dossiers.export_contact",
        "dossiers.view_auditlog",
        "dossiers.view_contact",
        "event_webhooks.add_webhookendpoint",
        "event_webhooks.change_webhookdelivery",
        "event_webhooks.change_webhookendpoint",
        "event_webhooks.delete_webhookendpoint",
        "event_webhooks.view_endpointevent",
        "event_webhooks.view_webhookattempt",
        "event_webhooks.view_webhookdelivery",
        "event_webhooks.view_webhookendpoint",
        "orchestrator.add_agentregistration",
        "orchestrator.add_apikey",
        "orchestrator.add_routingrule",
        "orchestrator.change_agentregistration",
        "orchestrator.change_apikey",
        "orchestrator.change_digest",
        "orchestrator.change_routingrule",
        "orchestrator.delete_routingrule",
        "orchestrator.view_agentregistration",
        "orchestrator.view_apikey",
        "orchestrator.view_digest",
        "orchestrator.view_routingrule",
        "orchestrator.view_task",
    ],
    "operator": [
        "dashboard.use_console",
        "dashboard.view_cannedresponse",
        "dashboard.work_inbox",
        "dossiers.view_contact",
        "orchestrator.view_digest",
        "orchestrator.view_task",
    ],
    "supervisor": [
        "broadcasts.add_broadcast",
        "broadcasts.change_broadcast",
        "broadcasts.view_broadcast",
        "broadcasts.view_recipient",
        "dashboard.add_cannedresponse",
        "dashboard.change_cannedresponse",
        "dashboard.change_operatorprofile",
        "dashboard.delete_cannedresponse",
        "dashboard.operate_tasks",
        "dashboard.supervise",
        "dashboard.use_console",
        "dashboard.view_cannedresponse",
        "dashboard.view_inboxitem",
        "dashboard.view_operatorprofile",
        "dashboard.work_inbox",
        "dossiers.add_contact",
        "dossiers.change_contact",
        "dossiers.export_contact",
        "dossiers.view_auditlog",
        "dossiers.view_contact",
        "event_webhooks.view_endpointevent",
        "event_webhooks.view_webhookattempt",
        "event_webhooks.view_webhookdelivery",
        "event_webhooks.view_webhookendpoint",
        "orchestrator.change_digest",
        "orchestrator.view_digest",
        "orchestrator.view_task",
    ],
}


def forwards(apps, schema_editor):
    from dashboard.roles import roles_sync

    roles_sync(roles=ROLES, apps=apps)


def backwards(apps, schema_editor):
    """Nothing to undo here: each 0006 restores the roles before it when it is undone."""


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0006_h19_broadcast_roles"),
        ("dashboard", "0006_digest_roles"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
