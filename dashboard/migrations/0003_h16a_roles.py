"""The operator, supervisor and admin groups (frozen copy of dashboard.access.ROLES as of
this migration; `manage.py sync_roles` brings a database up to the current table)."""

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
        "orchestrator.add_agentregistration",
        "orchestrator.add_apikey",
        "orchestrator.add_routingrule",
        "orchestrator.change_agentregistration",
        "orchestrator.change_apikey",
        "orchestrator.change_routingrule",
        "orchestrator.delete_routingrule",
        "orchestrator.view_agentregistration",
        "orchestrator.view_apikey",
        "orchestrator.view_routingrule",
        "orchestrator.view_task",
    ],
    "operator": [
        "dashboard.use_console",
        "dashboard.view_cannedresponse",
        "dashboard.work_inbox",
        "dossiers.view_contact",
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
        "orchestrator.view_task",
    ],
}


def forwards(apps, schema_editor):
    from dashboard.roles import roles_sync

    roles_sync(roles=ROLES, apps=apps)


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0002_h16a_console_permissions"),
        ("dossiers", "0004_h16a_export_permission_denied_audit"),
        ("orchestrator", "0005_h16a_api_key_scopes"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
