from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client


def test_it_sends_csp_frame_and_sniffing_headers(db):
    response = Client().get("/accounts/login/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_it_sets_hsts_and_secure_cookies_only_in_production():
    # The embedded demo is served over plain HTTP on localhost; production refuses it.
    assert not settings.PRODUCTION and getattr(settings, "SECURE_HSTS_SECONDS", 0) == 0
    # tests/compliance/test_deploy_check.py proves the production values pass check --deploy.


@pytest.mark.parametrize(
    "password,problem",
    [
        ("short-pw1", "too short"),
        ("password1234", "too common"),
        ("493817265019", "entirely numeric"),
        ("coordinator_a-2026", "too similar"),
    ],
)
def test_it_refuses_weak_passwords(django_user_model, db, password, problem):
    user = django_user_model(username="coordinator_a")
    with pytest.raises(ValidationError) as refused:
        validate_password(password, user)
    assert problem in " ".join(refused.value.messages)


def test_it_accepts_a_strong_password(django_user_model, db):
    validate_password("Kx7!mag-particle-trial", django_user_model(username="coordinator_a"))
