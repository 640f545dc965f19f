from django.core.management.base import BaseCommand, CommandError

from event_webhooks import services
from orchestrator.models import ApiKey


class Command(BaseCommand):
    help = (
        "Make a new callback signing secret for an API key (its tasks' callback_url deliveries) and "
        "print it once; the previous one keeps signing too for --overlap-seconds."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("key_id", type=int, help="the API key's number (#id in the admin)")
        parser.add_argument("--overlap-seconds", type=int, default=None)

    def handle(self, *args, key_id: int, overlap_seconds: int | None, **options) -> None:
        if not ApiKey.objects.filter(pk=key_id, role="client").exists():
            raise CommandError(f"No client API key #{key_id}.")
        secret = services.callback_secret_rotate(owner=f"key:{key_id}", actor="rotate_callback_secret",
                                                 overlap_seconds=overlap_seconds)  # fmt: skip
        self.stdout.write(f"The new callback signing secret of key #{key_id} (shown once, store it now):")
        self.stdout.write(secret)
