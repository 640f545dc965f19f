"""What joins a conversation besides SMS/WhatsApp: an outbound email to a contact with an open
email conversation joins it (a send to anyone else opens none), and the conversation page's
thread shows it, through the real email pipeline (test mode: the simulated provider posting
signed events to a live server)."""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from conversations.models import Conversation
from dossiers.models import Contact, Email
from orchestrator.services import task_create
from tests.support.services import transactional_db, wait_until


@transactional_db
def test_an_outbound_email_joins_the_contacts_open_email_conversation_and_shows_in_the_thread(
    live_server, settings, client, django_user_model
):
    settings.PUBLIC_BASE_URL = live_server.url
    settings.SENDGRID_EVENT_PUBLIC_KEY = ""  # test mode: the key derived from SECRET_KEY
    olivia = django_user_model.objects.create_user("olivia", password="pw-olivia-123", is_staff=True,
                                                   is_superuser=True)  # fmt: skip
    ada = Contact.objects.create(name="Ada", email="ada@example.org")
    grace = Contact.objects.create(name="Grace", email="grace@example.org")
    waiting = timezone.now()
    conv = Conversation.objects.create(contact=ada, channel="email", waiting_since=waiting,
                                       first_customer_message_at=waiting)  # fmt: skip

    task, _ = task_create(type="email.send", contact_id=ada.id,
                          payload={"subject": "About your refund", "text": "It is on its way."})  # fmt: skip
    task_create(type="email.send", contact_id=grace.id, payload={"subject": "Newsletter", "text": "News"})

    wait_until(lambda: Email.objects.filter(task_id=task.id).exists(), timeout=10, message="the email row")
    wait_until(lambda: Conversation.objects.get(pk=conv.pk).last_reply_at is not None, timeout=10,
               message="the email joining the conversation")  # fmt: skip
    conv.refresh_from_db()
    assert conv.waiting_since is None and conv.first_response_at is not None  # the reply stopped the clock
    assert not Conversation.objects.filter(contact=grace).exists()  # an outbound send opens none
    client.force_login(olivia)
    page = client.get(reverse("dashboard:conversation", args=[conv.pk])).content.decode()
    thread = page[page.index('id="cc-thread"') :]
    assert "About your refund" in thread and 'data-kind="email"' in thread
