"""A sponsor reads the trial pseudonymously: no identity field or value anywhere."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.urls import reverse

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests.trials.api_routes import (
    HIDDEN_FROM_SPONSOR,
    SPONSOR_DETAIL_STATUS,
    VISIBLE_TO_MONITOR,
    detail_routes,
    list_routes,
)
from trials.models import SubjectIdentity

IDENTITY_FIELDS = {"full_name", "date_of_birth", "medical_record_number"}


@pytest.fixture
def world(trial, site_a, site_b, coordinator_a, monitor, sponsor):
    """One record of every kind the API serves, in the sponsor's trial; every subject
    made along the way has an identity on file (see VISIBLE_TO_MONITOR)."""
    cast = SimpleNamespace(trial=trial, site_a=site_a, site_b=site_b, monitor=monitor)
    objects = {}
    basenames = {b for _, b in list_routes()} | {b for _, b, _ in detail_routes()}
    for basename in sorted(basenames):
        assert basename in VISIBLE_TO_MONITOR, f"no row factory for {basename!r}: add it to VISIBLE_TO_MONITOR"
        objects[basename] = trial if basename == "trial" else VISIBLE_TO_MONITOR[basename](cast)
    assert SubjectIdentity.objects.exists()
    return SimpleNamespace(objects=objects)


def _identity_leaks(payload) -> list[str]:
    leaks = []

    def walk(value):
        if isinstance(value, dict):
            leaks.extend(k for k in value if k in IDENTITY_FIELDS)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(payload)
    text = json.dumps(payload)
    for identity in SubjectIdentity.objects.all():
        for secret in (identity.full_name, identity.medical_record_number, identity.date_of_birth.isoformat()):
            if secret in text:
                leaks.append(secret)
    return leaks


def test_it_lists_everything_without_identity(api, world, sponsor):
    client = api(sponsor)
    for name, basename in list_routes():
        response = client.get(reverse(name))
        assert response.status_code == 200, name
        if basename in HIDDEN_FROM_SPONSOR:
            assert response.json()["count"] == 0, name
        else:
            assert response.json()["count"] >= 1, name  # the sponsor does read the trial
        assert _identity_leaks(response.json()) == [], name


def test_it_shows_every_detail_without_identity_and_refuses_identity_routes(api, world, sponsor):
    client = api(sponsor)
    for name, basename, methods in detail_routes():
        assert basename in world.objects, f"no object for {basename!r}"
        url = reverse(name, kwargs={"pk": world.objects[basename].pk})
        if name == "subject-identity":
            for method in methods:
                # A well-formed body, so the answer is about the role, not the input.
                body = {
                    "full_name": "Sponsor Attempt",
                    "date_of_birth": "1970-01-01",
                    "medical_record_number": "X-1",
                    "reason": "name corrected from the source",
                }
                response = getattr(client, method)(url, body, format="json")
                assert response.status_code in (403, 404), (method, response.status_code)
                assert _identity_leaks(response.json()) == []
            continue
        if "get" not in methods:
            continue
        response = client.get(url)
        expected = SPONSOR_DETAIL_STATUS.get(name, 404 if basename in HIDDEN_FROM_SPONSOR else 200)
        assert response.status_code == expected, (name, response.status_code)
        assert _identity_leaks(response.json()) == [], name
    assert not AuditEvent.objects.filter(action=AuditAction.IDENTITY_READ).exists()
