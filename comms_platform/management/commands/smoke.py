"""``manage.py smoke [--base-url URL --api-key KEY] [--timeout S] [--flow NAME …]``.

Runs one end-to-end flow per channel (``comms_platform.smoke.FLOWS``) through the tasks API
and prints a table: flow, PASS/FAIL, seconds, detail. Exit code 0 only when every flow
passed. Without ``--base-url`` (test mode only) it starts this checkout under uvicorn on a free
port, with simulated providers and in-process tasks, and drives it over HTTP; with
``--base-url`` and ``--api-key`` it drives a running instance.
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
        parser.add_argument(
            "--twilio-auth-token",
            default=None,
            help="signs the inbound Twilio webhooks of the inbound and WhatsApp flows (default: TWILIO_AUTH_TOKEN)",
        )

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

            record, key = api_key_create(name="smoke (local server)", contacts="write", all_tasks=True)
            smoke.erase_local_contacts(phone=options["phone"], email=options["email"])  # an interrupted run's
            try:
                with smoke.local_server() as base:
                    rows = self._run(
                        smoke.HttpApi(base, key), smoke.contact_via_api_or_database, flows, options
                    )
            except smoke.SmokeFailure as exc:
                raise CommandError(str(exc)) from None
            finally:
                ApiKey.objects.filter(id=record.id).update(revoked_at=timezone.now())
                smoke.erase_local_contacts(phone=options["phone"], email=options["email"])
        self.stdout.write(smoke.render(rows))
        if any(row.result != "PASS" for row in rows):
            raise SystemExit(1)

    @staticmethod
    def _run(api, factory, flows, options):
        token = options["twilio_auth_token"]
        ctx = smoke.Context(
            api=api, timeout=options["timeout"], phone=options["phone"], email=options["email"],
            contact_factory=factory, twilio_account_sid=settings.TWILIO_ACCOUNT_SID,
            twilio_auth_token=settings.TWILIO_AUTH_TOKEN if token is None else token,
        )  # fmt: skip
        return smoke.run(ctx, flows)
