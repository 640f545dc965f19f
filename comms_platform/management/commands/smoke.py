"""``manage.py smoke [--base-url URL --api-key KEY] [--timeout S] [--flow NAME …]``.

Runs one end-to-end flow per channel (``comms_platform.smoke.FLOWS``) through the tasks API
and prints a table: flow, PASS/FAIL, seconds, detail. Exit code 0 only when every flow
passed. Without ``--base-url`` it drives this process's app in process (test mode, simulated
providers); with ``--base-url`` and ``--api-key`` it drives a running instance over HTTP.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from comms_platform import smoke


class Command(BaseCommand):
    help = "End-to-end smoke test of every channel through the API; exit code 0 only when all flows pass."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--base-url", help="a running instance, e.g. https://comms.example.com")
        parser.add_argument("--api-key", help="an API key of that instance (client role)")
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="seconds each task may take (default 60)"
        )
        parser.add_argument(
            "--flow",
            action="append",
            choices=[f.name for f in smoke.FLOWS],
            help="run only this flow (repeatable); default: all",
        )
        parser.add_argument("--phone", default="+14155550100", help="the smoke contact's phone (E.164)")
        parser.add_argument("--email", default="smoke@example.com", help="the smoke contact's email address")

    def handle(self, *args, **options) -> None:
        flows = [f for f in smoke.FLOWS if not options["flow"] or f.name in options["flow"]]
        if options["base_url"]:
            if not options["api_key"]:
                raise CommandError("--base-url needs --api-key (create one with manage.py create_api_key)")
            api = smoke.HttpApi(options["base_url"], options["api_key"])
            factory = smoke.contact_via_api_or_database if settings.TEST_MODE else smoke.contact_via_api
            rows = self._run(api, factory, flows, options)
        else:
            if not settings.TEST_MODE:
                raise CommandError(
                    "in production, smoke needs --base-url and --api-key (it never sends in process)"
                )
            from django.utils import timezone

            from orchestrator.api.auth import api_key_create
            from orchestrator.models import ApiKey

            record, key = api_key_create(name="smoke (in process)")
            try:
                rows = self._run(smoke.InProcessApi(key), smoke.contact_in_database, flows, options)
            finally:
                ApiKey.objects.filter(id=record.id).update(revoked_at=timezone.now())
        self.stdout.write(smoke.render(rows))
        if any(row.result != "PASS" for row in rows):
            raise SystemExit(1)

    @staticmethod
    def _run(api, factory, flows, options):
        ctx = smoke.Context(
            api=api, timeout=options["timeout"], phone=options["phone"], email=options["email"],
            contact_factory=factory,
        )  # fmt: skip
        return smoke.run(ctx, flows)
