from django.core.management.base import BaseCommand

from broadcasts.housekeeping import housekeeping_run


class Command(BaseCommand):
    help = (
        "Start scheduled broadcasts whose time came, reconcile recipients left 'sending' by a lost "
        "worker (asks the provider), and restart sending for running broadcasts (beat runs this)."
    )

    def handle(self, *args, **options) -> None:
        self.stdout.write(str(housekeeping_run()))
