"""The operator console's webhook pages: the delivery log with its attempts, resend (same
webhook-id), enable/disable with its event, secret rotation shown once, never the secret."""

from __future__ import annotations

import pytest
from django.db import transaction

from comms_platform import events
from event_webhooks import services
from event_webhooks.models import DeliveryStatus, EndpointEvent, WebhookDelivery, WebhookEndpoint
from tests.fakes.webhook_receiver import Answer, WebhookReceiver

pytestmark = pytest.mark.django_db


def test_delivery_log_resend_and_endpoint_actions(admin_client, django_capture_on_commit_callbacks):
    with WebhookReceiver() as receiver:
        endpoint, secret = services.endpoint_create(url=receiver.url, event_types=["contact.opted_out"],
                                                    all_events=True)  # fmt: skip
        receiver.script = [Answer(400)]
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            events.publish("contact.opted_out", {"contact_id": "c1", "channel": "sms", "source": "keyword"})
        delivery = WebhookDelivery.objects.get()
        assert delivery.status == DeliveryStatus.FAILED
        page = admin_client.get(
            f"/admin/event_webhooks/webhookdelivery/{delivery.id}/change/"
        ).content.decode()
        assert delivery.webhook_id in page and "400" in page and "not retried" in page
        assert secret not in page
        listing = admin_client.get("/admin/event_webhooks/webhookdelivery/").content.decode()
        assert delivery.webhook_id in listing
        # Resend: delivered this time, with the same webhook-id.
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post("/admin/event_webhooks/webhookdelivery/",
                                         {"action": "resend", "_selected_action": [delivery.id]})  # fmt: skip
        assert response.status_code == 302
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
        ids = {r.headers.get("webhook-id") or r.headers.get("Webhook-Id") for r in receiver.received}
        assert ids == {delivery.webhook_id} and len(receiver.received) == 2
    # Disable, enable, rotate: each an event on the endpoint's page; the new secret shown once.
    changelist = "/admin/event_webhooks/webhookendpoint/"
    admin_client.post(changelist, {"action": "disable", "_selected_action": [endpoint.pk]})
    assert not WebhookEndpoint.objects.get(pk=endpoint.pk).enabled
    admin_client.post(changelist, {"action": "enable", "_selected_action": [endpoint.pk]})
    response = admin_client.post(changelist, {"action": "rotate_secret", "_selected_action": [endpoint.pk]},
                                 follow=True)  # fmt: skip
    assert "the new secret is whsec_" in response.content.decode()
    kinds = set(EndpointEvent.objects.filter(endpoint=endpoint).values_list("kind", flat=True))
    assert kinds == {"created", "disabled", "enabled", "secret_rotated"}
    page = admin_client.get(f"{changelist}{endpoint.pk}/change/").content.decode()
    assert "secret_rotated" in page and "disabled" in page
    assert secret not in page and WebhookEndpoint.objects.get(pk=endpoint.pk).secret_encrypted not in page


def test_an_operator_adds_an_endpoint_and_sees_its_secret_once(admin_client):
    response = admin_client.post("/admin/event_webhooks/webhookendpoint/add/", {
        "url": "http://127.0.0.1:9/hooks", "description": "crm", "event_types": ["task.failed", "message.received"],
        "enabled": "on",
        "events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "0",
        "deliveries-TOTAL_FORMS": "0", "deliveries-INITIAL_FORMS": "0",
    }, follow=True)  # fmt: skip
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.event_types == ["task.failed", "message.received"] and endpoint.all_events
    text = response.content.decode()
    assert "The signing secret is whsec_" in text
    secret = text.split("The signing secret is ")[1].split(" ")[0]
    assert services.signing_secrets(endpoint) == [secret]


def test_a_supervisor_reads_the_delivery_log_but_cannot_resend_or_rotate_an_admin_can(
    client, django_user_model, django_capture_on_commit_callbacks
):
    """Roles (dashboard/access.py): supervisors see endpoints and deliveries read-only;
    only admins resend and rotate; operators see neither."""
    from django.contrib.auth.models import Group

    from dashboard.access import ROLES
    from dashboard.roles import roles_sync

    if Group.objects.filter(name__in=ROLES).count() != len(ROLES):
        roles_sync(roles=ROLES)
    people = {}
    for role in ROLES:
        user = django_user_model.objects.create_user(f"wh-{role}", password="pw-long-enough-1", is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        people[role] = user
    with WebhookReceiver() as receiver:
        endpoint, _ = services.endpoint_create(url=receiver.url, event_types=["contact.opted_out"],
                                                    all_events=True)  # fmt: skip
        receiver.script = [Answer(400)]
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            events.publish("contact.opted_out", {"contact_id": "c1", "channel": "sms", "source": "keyword"})
        delivery = WebhookDelivery.objects.get()
        deliveries, endpoints = (
            "/admin/event_webhooks/webhookdelivery/",
            "/admin/event_webhooks/webhookendpoint/",
        )
        client.force_login(people["operator"])
        assert client.get(deliveries).status_code == 403 and client.get(endpoints).status_code == 403
        client.force_login(people["supervisor"])
        assert delivery.webhook_id in client.get(deliveries).content.decode()
        assert client.get(f"{endpoints}{endpoint.pk}/change/").status_code == 200
        assert client.get(f"{endpoints}add/").status_code == 403
        before = EndpointEvent.objects.filter(endpoint=endpoint).count()
        with django_capture_on_commit_callbacks(execute=True):
            client.post(deliveries, {"action": "resend", "_selected_action": [delivery.id]})
            client.post(endpoints, {"action": "rotate_secret", "_selected_action": [endpoint.pk]})
        delivery.refresh_from_db()
        assert (
            delivery.status == DeliveryStatus.FAILED
            and delivery.attempts == 1
            and len(receiver.received) == 1
        )
        assert EndpointEvent.objects.filter(endpoint=endpoint).count() == before
        client.force_login(people["admin"])
        with django_capture_on_commit_callbacks(execute=True):
            client.post(deliveries, {"action": "resend", "_selected_action": [delivery.id]})
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
