from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from dossiers.models import Contact
from dossiers.retention import contact_forget


class Command(BaseCommand):
    help = "Erase a contact's personal data everywhere (rows, blobs, webhook payloads, task payloads)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("contact_id")
        parser.add_argument("--actor", default="manage.py forget_contact", help="recorded in the audit log")

    def handle(self, *args, contact_id: str, actor: str, **options) -> None:
        try:
            report = contact_forget(contact_id=contact_id, actor=actor)
        except (Contact.DoesNotExist, ValidationError, ValueError):
            raise CommandError(f"No contact with id {contact_id}.") from None
        for kind, count in report.counts.items():
            self.stdout.write(f"{kind:<16} {count}")
        self.stdout.write(self.style.SUCCESS(f"contact {report.contact_id} erased; audit record kept"))
