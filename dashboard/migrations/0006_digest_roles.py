"""The role groups with the digests' permissions (every role lists the digests of notify tasks;
supervisors and admins may also send open ones at once): a frozen copy of dashboard.access.ROLES
as of this migration (`manage.py sync_roles` brings a database up to date)."""

from django.db import migrations

ROLES = {
    "admin": [
        "auth.add_user",
        "auth.change_user",
        "auth.view_group",
        "auth.view_user",
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
    from dashboard.roles import roles_sync

    previous = __import__("dashboard.migrations.0004_h18b_webhook_roles", fromlist=["ROLES"]).ROLES
    roles_sync(roles=previous, apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0005_merge_h17b_h18b"),
        ("orchestrator", "0009_digests"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
