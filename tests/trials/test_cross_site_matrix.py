"""Site B never reaches site A's records: 404 on every detail route (actions included),
absent from every list. The routes come from the URL configuration."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.urls import reverse

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests import factories as f
from tests.trials.api_routes import HIDDEN_FROM_SITE_B, OWN_RECORDS, detail_routes, list_routes
from trials.models import Consent, Injection, Membership, Role, Trial

DETAIL_ROUTES = detail_routes()
LIST_ROUTES = list_routes()


@pytest.fixture
def cast(trial, site_a, site_b, coordinator_a, coordinator_b, monitor):
    return SimpleNamespace(
        trial=trial,
        site_a=site_a,
        site_b=site_b,
        coordinator_a=coordinator_a,
        coordinator_b=coordinator_b,
        monitor=monitor,
    )


def test_it_finds_the_api_routes():
    # Guards the walk itself: if it found nothing, every test below would pass vacuously.
    names = {name for name, _, _ in DETAIL_ROUTES}
    assert {"subject-detail", "subject-identity", "consent-withdraw", "cell-batch-label", "injection-detail"} <= names
    assert len(LIST_ROUTES) >= 8


@pytest.mark.parametrize("name,basename,methods", DETAIL_ROUTES, ids=[r[0] for r in DETAIL_ROUTES])
def test_it_answers_404_to_site_b_on_every_detail_route(api, cast, name, basename, methods):
    assert basename in HIDDEN_FROM_SITE_B, f"no cross-site object for {basename!r}: add it to HIDDEN_FROM_SITE_B"
    hidden = HIDDEN_FROM_SITE_B[basename](cast)
    url = reverse(name, kwargs={"pk": hidden.pk})
    client = api(cast.coordinator_b)
    events_before = AuditEvent.objects.count()
    for method in methods:
        response = getattr(client, method)(url, {}, format="json")
        assert response.status_code == 404, (method, url, response.status_code)
        assert response.json()["error"]["code"] == "not_found"
    # The 404 writes nothing, except that an attempt to read identity is itself audited
    # (trials.services.subject_identity_read): HIPAA's access log counts refusals too.
    refused = AuditEvent.objects.filter(action=AuditAction.IDENTITY_READ_REFUSED).count()
    assert refused == (sum(m in ("get", "head") for m in methods) if name == "subject-identity" else 0)
    assert AuditEvent.objects.count() == events_before + refused


@pytest.mark.parametrize("name,basename", LIST_ROUTES, ids=[r[0] for r in LIST_ROUTES])
def test_it_never_lists_site_a_records_to_site_b(api, cast, name, basename):
    assert basename in HIDDEN_FROM_SITE_B, f"no cross-site object for {basename!r}: add it to HIDDEN_FROM_SITE_B"
    hidden = HIDDEN_FROM_SITE_B[basename](cast)
    response = api(cast.coordinator_b).get(reverse(name), {"page_size": 500})
    assert response.status_code == 200
    assert hidden.pk not in {row["id"] for row in response.json()["results"]}


def _trial_of(obj):
    if isinstance(obj, Trial):
        return obj
    return obj.subject.trial if isinstance(obj, (Consent, Injection)) else obj.trial


TRIAL_DETAIL_ROUTES = [r for r in DETAIL_ROUTES if r[0].endswith("-detail") and r[1] not in OWN_RECORDS]


@pytest.mark.parametrize("name,basename,methods", TRIAL_DETAIL_ROUTES, ids=[r[0] for r in TRIAL_DETAIL_ROUTES])
def test_it_shows_the_same_records_to_a_monitor_of_their_trial(api, cast, name, basename, methods):
    # The positive control: the 404s above come from scope, not from broken routes.
    hidden = HIDDEN_FROM_SITE_B[basename](cast)
    viewer = f.UserFactory()
    Membership.objects.create(user=viewer, trial=_trial_of(hidden), role=Role.MONITOR)
    response = api(viewer).get(reverse(name, kwargs={"pk": hidden.pk}))
    assert response.status_code == 200
    assert response.json()["id"] == hidden.pk
