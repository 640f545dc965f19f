"""Create or update the role groups from a {group: permissions} mapping (the migration and
``manage.py sync_roles`` both use it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def roles_sync(*, roles: Mapping[str, Any], apps: Any = None) -> dict[str, int]:
    """Make each group hold exactly its permissions; returns the count per group.

    ``apps`` is a migration's historical registry, or None for the live models. Permissions
    are created first when missing (a fresh database creates them only after migrating).
    """
    from django.apps import apps as live_apps
    from django.contrib.auth.management import create_permissions

    registry = apps or live_apps
    for app_config in registry.get_app_configs():
        app_config.models_module = getattr(app_config, "models_module", None) or True
        create_permissions(app_config, apps=registry, verbosity=0)
    group_model = registry.get_model("auth", "Group")
    permission_model = registry.get_model("auth", "Permission")
    counts = {}
    for name, perms in roles.items():
        group, _ = group_model.objects.get_or_create(name=name)
        wanted = []
        for perm in sorted(perms):
            app_label, codename = perm.split(".", 1)
            wanted.append(permission_model.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(wanted)
        counts[name] = len(wanted)
    return counts
