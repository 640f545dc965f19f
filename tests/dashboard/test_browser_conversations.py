"""Conversations in headless Chromium, in the production layout (test_browser_production.py:
gunicorn pages and webhooks on one host, uvicorn websockets on another, the Redis channel layer,
a real Celery worker). Events come from signed Twilio webhooks, clicks, and the sweep command."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from conversations.models import Conversation, PrivateNote
from dossiers.models import Message
from orchestrator.models import Task
from tests.dashboard import test_browser_production as prod
from tests.dashboard.test_browser_production import (
    mark_document,
    same_document,
    shot,
    signed_in_page,
    wait_live,
)
from tests.support.services import transactional_db, wait_until

# The production layout's fixtures (gunicorn + uvicorn + Redis layer + a Celery worker, Chromium).
layout, browser, olivia = prod.layout, prod.browser, prod.olivia

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.worker, transactional_db]


def test_a_new_conversation_appears_unassigned_live_and_is_picked_up(layout, browser, olivia):
    page, _ = signed_in_page(browser, layout, olivia)
    page.goto(f"{layout.web}/admin/conversations/?folder=unassigned")
    wait_live(page)
    mark_document(page)

    layout.inbound_sms("+14155550161", "My order arrived broken")  # Twilio → web host

    row = page.locator("#cc-conversations-table tr", has_text="+14155550161")
    row.wait_for(timeout=15_000)
    assert same_document(page)  # pushed into the open page, no reload
    assert "unassigned" in row.inner_text()
    shot(page, "conv-01-unassigned")
    row.get_by_role("link", name="Open").click()
    with page.expect_navigation():
        page.click("#cc-claim")
    page.locator("#cc-yours").wait_for()
    conv = Conversation.objects.get(contact__phone="+14155550161")
    assert conv.assignee == olivia and conv.status == "open"
    shot(page, "conv-02-taken")


def test_a_private_note_never_reaches_the_customer(layout, browser, olivia):
    layout.inbound_sms("+14155550162", "Can you call me?")
    conv = wait_until(lambda: Conversation.objects.filter(contact__phone="+14155550162").first(), timeout=15,
                      message="the conversation")  # fmt: skip
    page, _ = signed_in_page(browser, layout, olivia)
    page.goto(f"{layout.web}/admin/conversations/{conv.pk}/")
    page.fill("#cc-note", "Internal: refund approved by Sam")
    with page.expect_navigation():
        page.click("#cc-add-note")

    page.locator("#cc-notes", has_text="Internal: refund approved by Sam").wait_for()
    assert "refund approved" not in page.locator("#cc-thread").inner_text()
    assert PrivateNote.objects.get(conversation=conv).body == "Internal: refund approved by Sam"
    # Nothing went out to the customer: no send task, no outbound message.
    assert not Task.objects.filter(contact=conv.contact, type__endswith=".send").exists()
    assert not Message.objects.filter(contact=conv.contact, direction="outbound").exists()
    shot(page, "conv-03-private-note")


def test_the_supervisor_view_updates_live(layout, browser, olivia):
    page, _ = signed_in_page(browser, layout, olivia)
    page.goto(f"{layout.web}/admin/supervisor/")
    wait_live(page)
    mark_document(page)
    before = int(page.locator("#cc-sla-breached").inner_text())

    layout.inbound_sms("+14155550163", "Still waiting for my refund")  # a new conversation: the queue grows
    page.locator("#cc-queues tr[data-channel=sms]").wait_for(timeout=15_000)
    conv = wait_until(lambda: Conversation.objects.filter(contact__phone="+14155550163").first(), timeout=15,
                      message="the conversation")  # fmt: skip
    Conversation.objects.filter(pk=conv.pk).update(sla_due_at=timezone.now() - timedelta(seconds=1))
    call_command("conversations_sweep")  # what beat runs: flags it past its SLA

    page.wait_for_function(f"Number(document.getElementById('cc-sla-breached').textContent) === {before + 1}",
                           timeout=15_000)  # fmt: skip
    assert same_document(page)
    shot(page, "conv-04-supervisor")


def test_a_colleagues_claim_updates_the_buttons_of_an_open_conversation_page(
    layout, browser, olivia, django_user_model
):
    """Olivia has an unassigned conversation open; Bruno takes it with a real click on his own
    page: Olivia's page shows it is Bruno's (her Take it button gone), live, without a reload."""
    bruno = django_user_model.objects.create_user("bruno", "bruno@example.com", prod.PASSWORD, is_staff=True,
                                                  is_superuser=True)  # fmt: skip
    layout.inbound_sms("+14155550164", "Is anyone there?")
    conv = wait_until(lambda: Conversation.objects.filter(contact__phone="+14155550164").first(), timeout=15,
                      message="the conversation")  # fmt: skip
    watcher, _ = signed_in_page(browser, layout, olivia)
    watcher.goto(f"{layout.web}/admin/conversations/{conv.pk}/")
    wait_live(watcher)
    mark_document(watcher)
    assert watcher.locator("#cc-claim").is_visible()

    taker, _ = signed_in_page(browser, layout, bruno)
    taker.goto(f"{layout.web}/admin/conversations/{conv.pk}/")
    with taker.expect_navigation():
        taker.click("#cc-claim")  # Bruno's real click
    taker.locator("#cc-yours").wait_for()

    watcher.locator("#cc-head-actions", has_text="with bruno").wait_for(timeout=15_000)
    assert watcher.locator("#cc-claim").count() == 0
    assert same_document(watcher)  # pushed into the open page, no reload
    assert Conversation.objects.get(pk=conv.pk).assignee == bruno
    shot(watcher, "conv-05-colleague-claimed")


def test_an_operator_takes_a_queued_voice_handoff_with_a_click(layout, browser, olivia):
    """A caller asks the AI for a person (the simulated callee of a number ending in 4357, over the
    relay websocket); Olivia has no phone, so the caller waits in the hand-off's Twilio queue. Her
    conversation page shows the AI's summary and Take call; her click has the simulated Twilio
    dequeue the caller to her client leg, and the hand-off ends connected."""
    from agents.voice.models import HandoffQueue
    from conversations.services import operator_set_availability
    from orchestrator.api.auth import api_key_create
    from tests.conversations.test_handoff_live import voice_beat_is_fresh

    operator_set_availability(user=olivia, available=True)
    wait_until(
        lambda: voice_beat_is_fresh(layout.env["REDIS_URL"]), timeout=60, message="the worker's heartbeat"
    )
    _, key = api_key_create(name="browser-handoff")
    response = requests.post(f"{layout.web}/api/calls/", headers={"Authorization": f"Api-Key {key}"}, timeout=10,
                             json={"to": "+14155554357", "goal": "a delivery", "greeting": "Hi, this is Acme."})  # fmt: skip
    assert response.status_code == 201, response.text
    call_task_id = response.json()["id"]
    waiting = wait_until(lambda: HandoffQueue.objects.filter(call_task_id=call_task_id).exclude(queue_sid="").first(),
                         timeout=30, message="the caller waiting in the queue")  # fmt: skip
    conv = Conversation.objects.get(contact__phone="+14155554357", channel="voice")
    page, _ = signed_in_page(browser, layout, olivia)
    page.goto(f"{layout.web}/admin/conversations/{conv.pk}/")
    page.locator("#cc-handoff", has_text="I want to speak to a person").wait_for()
    shot(page, "conv-06-caller-waiting")

    with page.expect_navigation():
        page.click("#cc-take-call")  # the real click

    page.locator(".messagelist", has_text="Putting the caller through to you.").wait_for()
    handoff = wait_until(
        lambda: Task.objects.filter(pk=waiting.handoff_task_id, status="succeeded").first(),
        timeout=20, message="the hand-off's final state",
    )  # fmt: skip
    assert handoff.result == {"outcome": "connected"}
    assert HandoffQueue.objects.get(pk=waiting.pk).taken_by == "olivia"
    shot(page, "conv-07-call-taken")
