from django.core.management.base import BaseCommand

from conversations.services import conversations_sweep


class Command(BaseCommand):
    help = "Wake snoozed conversations whose time came, flag SLA breaches, finish late-parked inbound tasks."

    def handle(self, *args, **options) -> None:
        result = conversations_sweep()
        self.stdout.write(" ".join(f"{k}={v}" for k, v in result.items()))
