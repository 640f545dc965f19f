"""OpenAPI pieces drf-spectacular cannot infer on its own."""

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class StaffSessionScheme(SessionScheme):
    """The console's staff session cookie (SessionAuthentication restricted to staff)."""

    target_class = "orchestrator.api.auth.StaffSessionAuthentication"


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "orchestrator.api.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>` (or `Bearer <key>`); create one with `manage.py create_api_key NAME`.",
        }


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "example": "invalid"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": True},
                "problems": {
                    "type": "array",
                    "description": "Each field error with its code (one code per problem on every endpoint, "
                    "e.g. invalid_phone_number).",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
            "additionalProperties": True,
        }
    },
}

# The error answers every API operation can give (orchestrator/api/errors.py shapes them).
COMMON_ERRORS = {
    "400": "Invalid input: the message and `fields` say what is wrong.",
    "401": "No API key, or a wrong or revoked one.",
    "403": "The key may not do this.",
    "404": "No such resource.",
    "405": "Method not allowed.",
    "406": "Not acceptable.",
    "413": "The request body is too large.",
    "415": "Unsupported media type.",
    "429": "Too many requests for this API key.",
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: document the shared error answers everywhere."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in COMMON_ERRORS.items():
                if status not in responses or not responses[status].get("content"):
                    responses[status] = {"description": responses.get(status, {}).get("description") or description,
                                         "content": {"application/json": {"schema": ref}}}  # fmt: skip
            if (
                method in {"post", "patch", "put"}
                and "409" in responses
                and not responses["409"].get("content")
            ):
                responses["409"]["content"] = {"application/json": {"schema": ref}}
    return result


def drop_invalid_defaults(result, generator, request, public):
    """drf-spectacular postprocessing hook: a ``default: ''`` on a string that must be non-empty
    or of a format (a DRF field with ``default=""``, an optional query filter) is not valid
    OpenAPI for its own schema (openapi-spec-validator refuses it): the default is left out."""
    stack = [result]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("default") == "" and (node.get("minLength", 0) >= 1 or "format" in node):
                del node["default"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return result


def add_task_examples(result, generator, request, public):
    """drf-spectacular postprocessing hook: each task type's ``TaskCreate`` component gets its
    registered example (tests/api/test_openapi_document.py posts each one to the intake)."""
    from orchestrator import registry
    from orchestrator.api.serializers import _component_name

    schemas = result.get("components", {}).get("schemas", {})
    for task_type, spec in registry.payload_schemas().items():
        for direction in ("", "Request"):
            component = schemas.get(_component_name(task_type) + direction)
            if component is not None:
                component["example"] = {"type": task_type, "payload": spec.example}
    return result
