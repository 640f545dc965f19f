from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from dossiers.models import Contact
from dossiers.retention import contact_forget


class Command(BaseCommand):
    help = (
        "Erase a contact's personal data everywhere (rows, files, webhook payloads, task payloads). "
        "--dry-run lists what would go; otherwise you confirm by typing the contact id (or pass --yes)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("contact_id")
        parser.add_argument("--actor", default="manage.py forget_contact", help="recorded in the audit log")
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be erased; change nothing"
        )
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args, contact_id: str, actor: str, dry_run: bool, yes: bool, **options) -> None:
        try:
            plan = contact_forget(contact_id=contact_id, actor=actor, dry_run=True)
        except (Contact.DoesNotExist, ValidationError, ValueError):
            raise CommandError(f"No contact with id {contact_id}.") from None
        if dry_run or not yes:
            self._print(plan)
        if dry_run:
            return
        if not yes:
            answer = input(f"Type the contact id ({plan.contact_id}) to erase all of the above: ").strip()
            if answer != plan.contact_id:
                raise CommandError("Not confirmed; nothing was erased.")
        report = contact_forget(contact_id=contact_id, actor=actor)
        for line in report.lines():
            self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS(f"contact {report.contact_id} erased; audit record kept"))

    def _print(self, plan) -> None:
        for line in plan.lines():
            self.stdout.write(line)
        self.stdout.write("Kept elsewhere, not erased by this command:")
        for note in plan.provider_keeps:
            self.stdout.write(f"  - {note}")
