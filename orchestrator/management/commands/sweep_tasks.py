from django.core.management.base import BaseCommand

from orchestrator.services import sweep_tasks


class Command(BaseCommand):
    help = (
        "Re-send tasks left pending/queued past TASK_SWEEP_AGE_SECONDS (e.g. the broker was down at "
        "intake), retake dispatched tasks whose lease ran out, expire tasks past expires_at, and queue "
        "a provider status check for sends in progress past STATUS_CHECK_AGE_SECONDS, flush digests whose "
        "window is over. "
        "Celery beat runs the same sweep every TASK_SWEEP_INTERVAL_SECONDS."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than", type=int, default=None, help="seconds (default: TASK_SWEEP_AGE_SECONDS)"
        )
        parser.add_argument("--batch", type=int, default=500)

    def handle(self, *args, older_than: int | None, batch: int, **options) -> None:
        report = sweep_tasks(older_than_seconds=older_than, batch=batch)
        self.stdout.write(
            f"resent {report.resent}, expired {report.expired}, still waiting {report.left_pending}, "
            f"status checks queued {report.status_checks}, digests flushed {report.digests}"
        )
