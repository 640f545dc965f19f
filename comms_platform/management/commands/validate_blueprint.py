"""``manage.py validate_blueprint [path]``: check a Render Blueprint against config.schema.json.

Prints each problem (exit code 1) or ``ok`` (exit code 0). Runs when the production
configuration of this process is incomplete (settings.py skips its start-up check for it),
so CI and an operator's laptop can run it.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from comms_platform.blueprint import blueprint_problems


class Command(BaseCommand):
    help = "Check render.yaml: every production variable provided, no committed secrets, every service wired."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", nargs="?", default=str(Path(settings.BASE_DIR) / "render.yaml"))

    def handle(self, *args, **options) -> None:
        path = Path(options["path"])
        problems = blueprint_problems(path)
        if problems:
            self.stdout.write(f"{path}: {len(problems)} problem(s)")
            for problem in problems:
                self.stdout.write(f"  - {problem}")
            raise SystemExit(1)
        self.stdout.write(f"{path}: ok")
