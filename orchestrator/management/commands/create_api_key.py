from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from orchestrator.api.auth import api_key_create
from orchestrator.models import ALL_TYPES, AgentRegistration, ApiKeyRole, ContactAccess


class Command(BaseCommand):
    help = (
        "Create an API key and print it once (only its digest is stored). A client key creates every "
        "type open to clients (or --types), sees only its own tasks (or --all-tasks) and no contacts "
        "(or --contacts read|write)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="who the key is for, e.g. billing-service")
        parser.add_argument(
            "--agent",
            metavar="AGENT",
            help="an agent key for this remote agent (its registration's agent name): it reads and "
            "reports (PATCH /api/tasks/<id>/) only the tasks assigned to that agent",
        )
        parser.add_argument(
            "--types", help=f"comma-separated task types it may create (default {ALL_TYPES}: all)"
        )
        parser.add_argument("--contacts", choices=ContactAccess.values, default=ContactAccess.NONE)
        parser.add_argument("--all-tasks", action="store_true", help="sees and cancels every client's tasks")
        parser.add_argument("--webhooks", action="store_true", help="manages its outbound webhook endpoints")
        parser.add_argument("--expires-in-days", type=int, help="the key stops working after this many days")
        parser.add_argument("--quiet", action="store_true", help="print only the key")

    def handle(self, *args, name: str, agent: str | None, quiet: bool, **options) -> None:
        role = ApiKeyRole.AGENT if agent else ApiKeyRole.CLIENT
        registration = None
        if agent:
            registration = (
                AgentRegistration.objects.filter(agent=agent, kind="remote").order_by("task_type").first()
            )
            if registration is None:
                known = sorted(
                    set(AgentRegistration.objects.filter(kind="remote").values_list("agent", flat=True))
                )
                raise CommandError(
                    f"No remote agent named {agent!r}. Remote agents: {', '.join(known) or '(none)'}."
                )
        types = [t.strip() for t in options["types"].split(",") if t.strip()] if options["types"] else None
        days = options["expires_in_days"]
        api_key, key = api_key_create(
            name=name,
            role=role,
            task_types=types,
            contacts=options["contacts"],
            all_tasks=options["all_tasks"],
            webhooks=options["webhooks"],
            agent_registration=registration,
            expires_at=timezone.now() + timedelta(days=days) if days else None,
        )
        if quiet:
            self.stdout.write(key)
            return
        self.stdout.write(
            f"Created API key #{api_key.pk} '{name}' ({role}). Store it now; it is not shown again:"
        )
        self.stdout.write(key)
        self.stdout.write("Send it as: Authorization: Api-Key <key>")
        for label, value in getattr(api_key, "shown_once", {}).items():
            self.stdout.write(f"{label} (shown once, store it too):")
            self.stdout.write(value)
