from __future__ import annotations

import pytest
from django.core.management import call_command


def test_it_generates_a_valid_openapi_schema_without_warnings(db, tmp_path):
    schema = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(schema))
    text = schema.read_text()
    for path in ("/api/v1/subjects/{id}/identity/", "/api/v1/consents/{id}/withdraw/", "/api/v1/auth/token/"):
        assert path in text
    assert "deidentification_secret" not in text


@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/"])
def test_it_serves_the_schema_and_docs(client, coordinator_a, url):
    # Signed-in users only (tests/config/test_api_docs_access.py covers the refusal).
    client.force_login(coordinator_a)
    assert client.get(url).status_code == 200
