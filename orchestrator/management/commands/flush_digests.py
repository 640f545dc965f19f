from django.core.management.base import BaseCommand
from django.utils import timezone

from orchestrator.models import Digest, DigestStatus
from orchestrator.services import digest_flush, digests_flush_due


class Command(BaseCommand):
    help = (
        "Send every open digest whose window is over now (the beat sweep does it every "
        "TASK_SWEEP_INTERVAL_SECONDS; each digest's own ETA message at its closes_at). With --all, "
        "send every open digest now, before its window ends; --key limits --all to one key."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--all", action="store_true", help="also the digests whose window is still open")
        parser.add_argument("--key", default=None, help="with --all: only digests with this key")
        parser.add_argument("--batch", type=int, default=500)

    def handle(self, *args, all: bool, key: str | None, batch: int, **options) -> None:
        if not all:
            sent = digests_flush_due(batch=batch)
            self.stdout.write(f"sent {sent} due digest(s)")
            return
        open_ = Digest.objects.filter(status=DigestStatus.OPEN)
        if key:
            open_ = open_.filter(key=key)
        outcomes = [
            digest_flush(digest_id=digest_id, by="command", force=True)
            for digest_id in open_.order_by("closes_at").values_list("id", flat=True)[:batch]
        ]
        left = Digest.objects.filter(status=DigestStatus.OPEN, closes_at__lte=timezone.now()).count()
        self.stdout.write(f"sent {outcomes.count('sent')} digest(s), {outcomes.count('empty')} empty; "
                          f"{left} due still open")  # fmt: skip
