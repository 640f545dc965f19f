"""Demo data the messaging examples of docs/api.md need on a fresh install (``seed_demo`` runs it):
an approved WhatsApp template and a contact inside WhatsApp's 24-hour window."""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from agents.messaging.models import MessageTemplate
from dossiers.services import contact_get_or_create

# seed_demo's Ada Lovelace (created here too when this runs on its own).
WINDOW_CONTACT = {"name": "Ada Lovelace", "phone": "+14155550101", "email": "ada@example.com"}
# Twilio's sample Content SID format (HX + 32 hex); the simulated provider accepts any.
TEMPLATE = {"name": "order_shipped", "locale": "en", "channel": "whatsapp",
            "body": "Hi {{ name }}, your order {{ order }} has shipped.",
            "content_sid": "HX" + "d" * 32, "content_variables": {"1": "name", "2": "order"}}  # fmt: skip


class Command(BaseCommand):
    help = "Seed an approved WhatsApp template and a contact who wrote on WhatsApp just now (idempotent)."

    def handle(self, *args, **options) -> None:
        template, created = MessageTemplate.objects.update_or_create(
            name=TEMPLATE["name"], locale=TEMPLATE["locale"], channel=TEMPLATE["channel"],
            defaults={k: v for k, v in TEMPLATE.items() if k not in ("name", "locale", "channel")},
        )  # fmt: skip
        contact, _ = contact_get_or_create(**WINDOW_CONTACT)
        # Inside the 24-hour window from now on (each run re-opens it): free text may be sent.
        type(contact).objects.filter(id=contact.id).update(
            whatsapp=f"whatsapp:{contact.phone}",
            last_inbound_whatsapp_at=timezone.now() - timedelta(minutes=1),
        )
        self.stdout.write(
            f"WhatsApp: template '{template.name}' (approved, {template.content_sid}) "
            f"{'created' if created else 'already there'}; contact {contact.name} {contact.phone} "
            f"(id {contact.id}) is inside the 24-hour window."
        )
