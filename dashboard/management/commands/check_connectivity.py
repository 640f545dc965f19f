from django.core.management.base import BaseCommand

from dashboard.connectivity import run_checks


class Command(BaseCommand):
    help = "Check the database, Redis and each provider (simulators in test mode); exit 1 when one fails."

    def handle(self, *args, **options) -> None:
        results = run_checks()
        width = max(len(r.name) for r in results)
        for r in results:
            style = (
                self.style.SUCCESS
                if r.status == "ok"
                else self.style.ERROR
                if not r.ok
                else self.style.WARNING
            )
            self.stdout.write(f"{r.name.ljust(width)}  {style(r.status.ljust(9))}  {r.detail}")
        if not all(r.ok for r in results):
            raise SystemExit(1)
