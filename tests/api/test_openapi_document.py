"""The OpenAPI document is valid OpenAPI 3 (openapi-spec-validator), documents the webhook
endpoints and the shared error shape, and its docs pages come from our own static files."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db


@pytest.fixture
def document(api):
    response = api.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def test_the_document_validates(document):
    validate(document)  # raises on any violation of the OpenAPI 3 specification


def test_the_webhook_endpoints_and_error_problems_are_documented(document):
    assert "/api/webhook-endpoints/" in document["paths"]
    assert "/api/webhook-endpoints/{id}/rotate-secret/" in document["paths"]
    created = document["paths"]["/api/webhook-endpoints/"]["post"]["responses"]["201"]
    assert "secret" in str(created) or "EndpointCreated" in str(created)
    error = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert "problems" in error


def test_each_task_type_has_its_payload_component_and_its_example_is_accepted_by_the_intake(api, document):
    from django.core.management import call_command

    from dossiers.models import Contact

    call_command("seed_messaging_demo", stdout=__import__("io").StringIO())  # the example's template
    schemas = document["components"]["schemas"]
    union = schemas["TaskCreateRequest"]
    assert union["discriminator"]["propertyName"] == "type"
    mapping = union["discriminator"]["mapping"]
    assert {"sms.send", "whatsapp.send", "email.send", "call.outbound", "content.generate", "notify"} <= set(
        mapping
    )
    contact = Contact.objects.get(phone="+14155550101")
    for task_type, ref in mapping.items():
        component = schemas[ref.rsplit("/", 1)[1]]
        payload_ref = str(component["properties"]["payload"])
        assert "PayloadRequest" in payload_ref, (task_type, payload_ref)  # its own payload schema
        example = dict(component["example"])
        assert example["type"] == task_type
        if task_type == "notify":
            example["contact"] = str(contact.id)  # notify needs a contact: routing picks its channels
        response = api.post("/api/tasks/", example, content_type="application/json")
        assert response.status_code == 201, (task_type, response.content)
