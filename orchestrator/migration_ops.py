"""Helpers for data migrations that seed the agent registry.

Every agent app seeds its ``AgentRegistration`` rows the same way; this keeps the
update-or-create and its reverse in one place. It uses the historical model (``apps``),
so it stays valid as the model changes.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def seed_registrations(rows: list[dict[str, Any]]) -> migrations.RunPython:
    """A RunPython that creates (or updates) the rows, and deletes them when reversed."""

    def seed(apps, schema_editor) -> None:
        AgentRegistration = apps.get_model("orchestrator", "AgentRegistration")
        for row in rows:
            AgentRegistration.objects.update_or_create(task_type=row["task_type"], defaults=row)

    def unseed(apps, schema_editor) -> None:
        AgentRegistration = apps.get_model("orchestrator", "AgentRegistration")
        AgentRegistration.objects.filter(task_type__in=[r["task_type"] for r in rows]).delete()

    return migrations.RunPython(seed, unseed)
