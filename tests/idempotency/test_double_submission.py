"""A form submitted twice (double click, reload, back button) and an API POST repeated with
the same Idempotency-Key save once: the second answer is the first one's, with no second
row and no second audit event (issue #18, item 3)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from compliance.models import Signature
from idempotency import store
from idempotency.middleware import ALREADY_SAVED
from idempotency.models import IdempotencyKey
from tests import factories as f
from tests.factories import PASSWORD
from trials.models import Subject


@pytest.fixture
def visit(ready, coordinator_a, investigator_a):
    subject, consent, batch = ready
    f.InjectionFactory(subject=subject, batch=batch, administered_by=coordinator_a, verified_by=investigator_a)
    return subject


def _token(html: str) -> str:
    match = re.search(r'name="form_token" value="([^"]+)"', html)
    assert match, "the form carries no one-time token"
    return match.group(1)


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_sign_form_submitted_twice_signs_once(visit, investigator_a):
    client = _client(investigator_a)
    token = _token(client.get(f"/subjects/{visit.pk}/").content.decode())
    data = {"meaning": "approval", "password": PASSWORD, "form_token": token}

    first = client.post(f"/subjects/{visit.pk}/sign/", data)
    events = AuditEvent.objects.count()
    second = client.post(f"/subjects/{visit.pk}/sign/", data)

    assert first.status_code == second.status_code == 302
    assert second["Location"] == first["Location"]
    assert Signature.objects.count() == 1
    assert AuditEvent.objects.count() == events  # the second wrote no audit event
    page = client.get(second["Location"]).content.decode()
    assert ALREADY_SAVED in page


def test_a_refused_submission_releases_its_token_for_the_corrected_one(visit, investigator_a):
    client = _client(investigator_a)
    token = _token(client.get(f"/subjects/{visit.pk}/").content.decode())

    refused = client.post(
        f"/subjects/{visit.pk}/sign/", {"meaning": "approval", "password": "wrong", "form_token": token}
    )
    assert refused.status_code == 400
    assert _token(refused.content.decode()) == token  # the page shown again keeps its token
    assert not IdempotencyKey.objects.exists()

    signed = client.post(
        f"/subjects/{visit.pk}/sign/", {"meaning": "approval", "password": PASSWORD, "form_token": token}
    )
    assert signed.status_code == 302 and Signature.objects.count() == 1


def test_the_enrol_form_submitted_twice_enrols_once(site_a, coordinator_a):
    client = _client(coordinator_a)
    token = _token(client.get("/subjects/new/").content.decode())
    data = {"site": site_a.pk, "enrolment_date": "2026-01-15", "status": "enrolled", "form_token": token}
    first = client.post("/subjects/new/", data)
    second = client.post("/subjects/new/", data)
    assert first.status_code == second.status_code == 302 and first["Location"] == second["Location"]
    assert Subject.objects.count() == 1


def test_a_token_is_the_users_own(visit, investigator_a, coordinator_a):
    """Another user's token is another key: it replays nothing of the first user's."""
    client = _client(investigator_a)
    token = _token(client.get(f"/subjects/{visit.pk}/").content.decode())
    client.post(f"/subjects/{visit.pk}/sign/", {"meaning": "approval", "password": PASSWORD, "form_token": token})
    assert IdempotencyKey.objects.get().user == investigator_a


# --------------------------------------------------------------------------- API


def _api_sign(client, visit, key, meaning="approval"):
    return client.post(
        "/api/v1/signatures/",
        {"object_type": "trials.subject", "object_id": str(visit.pk), "meaning": meaning, "password": PASSWORD},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )


def test_the_api_replays_the_first_response_for_the_same_key_and_body(api, visit, investigator_a):
    client = api(investigator_a)
    first = _api_sign(client, visit, "sign-visit-1")
    events = AuditEvent.objects.count()
    second = _api_sign(client, visit, "sign-visit-1")

    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second["Idempotent-Replayed"] == "true"
    assert Signature.objects.count() == 1
    assert AuditEvent.objects.count() == events


def test_the_api_refuses_the_same_key_with_another_body(api, visit, investigator_a):
    client = api(investigator_a)
    assert _api_sign(client, visit, "sign-visit-1").status_code == 201
    with_other_body = _api_sign(client, visit, "sign-visit-1", meaning="review")
    assert with_other_body.status_code == 422
    assert with_other_body.json()["error"]["code"] == "idempotency_key_reused"
    assert Signature.objects.count() == 1


def test_the_api_keys_are_scoped_per_user(api, visit, investigator_a, site_a):
    other = f.UserFactory(username="investigator_a2")
    f.MembershipFactory(user=other, trial=site_a.trial, site=site_a, role="investigator")
    assert _api_sign(api(investigator_a), visit, "same-key").status_code == 201
    assert _api_sign(api(other), visit, "same-key").status_code == 201
    assert Signature.objects.count() == 2


def test_the_api_releases_the_key_of_a_refused_request(api, visit, investigator_a):
    client = api(investigator_a)
    refused = client.post(
        "/api/v1/signatures/",
        {"object_type": "trials.subject", "object_id": str(visit.pk), "meaning": "approval", "password": "wrong"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    assert refused.status_code == 403
    assert not IdempotencyKey.objects.exists()
    assert _api_sign(client, visit, "k1").status_code == 201


def test_the_api_answers_409_while_the_first_request_runs(api, visit, investigator_a):
    client = api(investigator_a)
    assert _api_sign(client, visit, "busy").status_code == 201
    # As if the first request were still running: its key claimed, no answer stored yet.
    IdempotencyKey.objects.update(state=IdempotencyKey.State.PENDING, created_at=timezone.now())
    response = _api_sign(client, visit, "busy")
    assert response.status_code == 409 and response.json()["error"]["code"] == "idempotency_key_in_use"
    assert Signature.objects.count() == 1


def test_keys_expire_after_the_ttl(api, visit, investigator_a, settings):
    settings.IDEMPOTENCY_KEY_TTL = 3600
    client = api(investigator_a)
    assert _api_sign(client, visit, "old").status_code == 201
    IdempotencyKey.objects.update(created_at=timezone.now() - dt.timedelta(hours=2))
    store.purge()
    assert not IdempotencyKey.objects.exists()
