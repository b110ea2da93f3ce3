"""The OpenAPI schema documents every error an operation answers, with its shape (issue 15)."""

import pytest

pytestmark = pytest.mark.django_db

PUBLIC = {"/api/auth/token/", "/api/health/", "/api/schema/"}


def test_every_operation_documents_its_errors_with_their_shape(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    assert set(components["Error"]["required"]) == {"detail", "code"}
    assert set(components["ValidationError"]["properties"]) == {"detail", "code", "errors"}
    missing = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            expected = {"400", "404"}
            if path not in PUBLIC:
                expected |= {"401", "403"}
            if method in ("post", "put", "patch", "delete") and path not in PUBLIC:
                expected.add("409")
            responses = operation["responses"]
            for code in sorted(expected - set(responses)):
                missing.append(f"{method.upper()} {path}: {code}")
            for code in expected & set(responses):
                ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[1] in ("Error", "ValidationError"), (path, method, code, ref)
    assert missing == []
