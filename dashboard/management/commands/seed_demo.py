from django.core.management.base import BaseCommand

from dossiers.models import Contact
from orchestrator.api.auth import api_key_create
from orchestrator.models import ApiKey
from orchestrator.services import task_create

DEMO_CONTACTS = [
    {"name": "Ada Lovelace", "phone": "+14155550101", "email": "ada@example.com", "locale": "en",
     "timezone": "Europe/London", "whatsapp": "whatsapp:+14155550101"},
    {"name": "Grace Hopper", "phone": "+14155550102", "email": "grace@example.com", "locale": "en",
     "timezone": "America/New_York"},
    {"name": "Léon Foucault", "phone": "+33612345678", "email": "leon@example.com", "locale": "fr",
     "timezone": "Europe/Paris"},
]  # fmt: skip


class Command(BaseCommand):
    help = "Load demo data (idempotent): contacts, a demo API key (printed once) and a few diagnostic tasks."

    def handle(self, *args, **options) -> None:
        created = 0
        contacts = []
        for row in DEMO_CONTACTS:
            contact, new = Contact.objects.get_or_create(phone=row["phone"], defaults=row)
            contacts.append(contact)
            created += new
        self.stdout.write(f"Demo contacts: {created} created, {len(contacts) - created} already there.")
        if not ApiKey.objects.filter(name="demo").exists():
            _, key = api_key_create(name="demo")
            self.stdout.write(f"Demo API key (shown once): {key}")
            self.stdout.write(
                "  try: curl -H 'Authorization: Api-Key " + key + "' http://127.0.0.1:8000/api/tasks/"
            )
        for contact in contacts:
            task_create(
                type="diagnostic.echo",
                payload={"note": f"demo task for {contact.name}"},
                contact_id=contact.id,
                correlation_id="demo",
                source="seed_demo",
                idempotency_key=f"demo-{contact.phone}",
                digest="demo",
            )
        self.stdout.write("Demo tasks: one diagnostic.echo task per contact (correlation id 'demo').")
