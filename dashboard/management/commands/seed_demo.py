from django.apps import apps
from django.core.management import call_command
from django.core.management.base import BaseCommand

from dashboard.models import CannedResponse
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

DEMO_CANNED = [
    ("Thanks", "Thanks for your message, we are looking into it and will reply shortly."),
    ("Delivery times", "Orders ship within 2 working days; you get a tracking link by SMS."),
    ("Opening hours", "Our team answers Monday to Friday, 9:00-18:00."),
]


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
            _, key = api_key_create(name="demo", contacts="write", all_tasks=True)
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
        for title, body in DEMO_CANNED:
            CannedResponse.objects.get_or_create(title=title, defaults={"body": body})
        self.stdout.write("Canned responses for the inbox: " + ", ".join(t for t, _ in DEMO_CANNED) + ".")
        if apps.is_installed("agents.messaging"):  # the messaging agent's own demo rows (by name: no import)
            call_command("seed_messaging_demo", stdout=self.stdout)
