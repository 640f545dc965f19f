from django.core.management.base import BaseCommand

from agents.messaging.inbound import media_pending_fetch


class Command(BaseCommand):
    help = (
        "Queue the download of inbound media not fetched yet (lost while Redis was down, or failing). "
        "Beat runs the same every MEDIA_PICKUP_INTERVAL_SECONDS."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", type=float, default=30.0, help="seconds since the message arrived"
        )
        parser.add_argument("--window-hours", type=float, default=48.0, help="how far back to look")

    def handle(self, *args, **options):
        queued = media_pending_fetch(
            min_age_seconds=options["older_than"], window_hours=options["window_hours"]
        )
        self.stdout.write(f"queued {queued} message(s) for media download")
