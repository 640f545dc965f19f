"""``manage.py config_report [--json] [--mode test|production]``.

Shows every environment variable of ``comms_platform/config.schema.json``: its state
(set, default, missing, placeholder, invalid), its value with secrets masked, and
whether the mode requires it. Exits 1 when that mode would refuse to start.
"""

from __future__ import annotations

import json
import os

from django.conf import settings
from django.core.management.base import BaseCommand

from comms_platform import config


class Command(BaseCommand):
    help = (
        "Show the state of every configuration variable (secrets masked); "
        "exit code 1 when the mode would refuse to start."
    )
    # Reading the environment needs no models: run even when system checks fail.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--mode",
            choices=config.modes(),
            default=None,
            help="mode to check the environment against (default: the COMMS_MODE this process runs in)",
        )
        parser.add_argument("--json", action="store_true", help="print a JSON object instead of the table")

    def handle(self, *args, **options) -> None:
        mode = options["mode"] or settings.COMMS_MODE
        environ = dict(os.environ)
        data = config.report_data(environ, mode)
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.stdout.write(config.render_report(environ, mode))
        if not data["ok"]:
            raise SystemExit(1)
