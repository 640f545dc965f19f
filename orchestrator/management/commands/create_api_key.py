from django.core.management.base import BaseCommand

from orchestrator.api.auth import api_key_create
from orchestrator.models import ApiKeyRole


class Command(BaseCommand):
    help = "Create an API key and print it once (only its digest is stored)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="who the key is for, e.g. billing-service")
        parser.add_argument(
            "--agent",
            action="store_true",
            help="give the key the agent role: it may also report progress (PATCH /api/tasks/<id>/)",
        )
        parser.add_argument("--quiet", action="store_true", help="print only the key")

    def handle(self, *args, name: str, agent: bool, quiet: bool, **options) -> None:
        role = ApiKeyRole.AGENT if agent else ApiKeyRole.CLIENT
        api_key, key = api_key_create(name=name, role=role)
        if quiet:
            self.stdout.write(key)
            return
        self.stdout.write(
            f"Created API key #{api_key.pk} '{name}' ({role}). Store it now; it is not shown again:"
        )
        self.stdout.write(key)
        self.stdout.write("Send it as: Authorization: Api-Key <key>")
