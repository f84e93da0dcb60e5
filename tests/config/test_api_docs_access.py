"""The OpenAPI schema and its browsable docs map every endpoint, parameter and error:
signed-in users only (an anonymous caller learns nothing of the attack surface)."""

from __future__ import annotations

import json

from drf_spectacular.generators import SchemaGenerator


def test_it_refuses_the_schema_to_an_anonymous_caller(client, db):
    response = client.get("/api/schema/?format=json")
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] == "not_authenticated"
    assert b"/api/v1/" not in response.content


def test_it_sends_an_anonymous_browser_from_the_docs_to_sign_in(client, db):
    response = client.get("/api/docs/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_serves_the_schema_and_docs_to_a_signed_in_user(client, sponsor):
    client.force_login(sponsor)
    assert client.get("/api/docs/").status_code == 200
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    # The schema the fuzzer (tests/config/test_api_fuzz.py) builds in-process is the one served.
    assert json.loads(response.content) == json.loads(
        json.dumps(SchemaGenerator().get_schema(request=None, public=True))
    )


def test_every_operation_documents_the_error_envelope(client, sponsor):
    client.force_login(sponsor)
    schema = client.get("/api/schema/?format=json").json()
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for code in ("403", "404"):
                assert operation["responses"][code]["content"]["application/json"]["schema"] == envelope, (method, path)
