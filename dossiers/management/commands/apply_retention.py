from django.core.management.base import BaseCommand

from dossiers.retention import retention_apply


class Command(BaseCommand):
    help = "Delete dossier records, blobs, webhook events and finished tasks past their retention period."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")

    def handle(self, *args, dry_run: bool = False, **options) -> None:
        report = retention_apply(dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        for kind, count in report.counts.items():
            self.stdout.write(f"{kind:<16} {verb} {count}")
        self.stdout.write(f"{'blobs':<16} {verb} {report.blobs}")
