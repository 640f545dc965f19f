from django.core.management.base import BaseCommand

from dashboard.access import ROLES
from dashboard.roles import roles_sync


class Command(BaseCommand):
    help = "Create or update the operator, supervisor and admin groups from dashboard/access.py."

    def handle(self, *args, **options) -> None:
        for group, count in roles_sync(roles=ROLES).items():
            self.stdout.write(f"{group:<12} {count} permissions")
