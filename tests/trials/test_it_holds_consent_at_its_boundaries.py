"""Consent in force, at the exact instants where it starts and stops (issue #13, items 1
and 8): a consent is in force from the instant it is signed (inclusive) until the
instant a scope is withdrawn (exclusive). A ``<=`` turned ``<`` anywhere in the rule
fails one of these tests: the per-object form (``consent_allows``), the refusing form
(``assert_scope_active``, used by injections and scans), the injection service, and
the queryset form (``subjects_sharing_data``) that the sponsor view filters with.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from unittest import mock

import pytest

from config.errors import RuleViolation
from tests import factories as f
from trials.models import Injection
from trials.selectors import consent_allows, subjects_sharing_data
from trials.services.consent import assert_scope_active, consent_withdraw
from trials.services.injections import injection_record

TICK = dt.timedelta(microseconds=1)


def _signed_at(subject, at, **scopes):
    return f.ConsentFactory(subject=subject, signed_at=at, **scopes)


def _withdrawn(site, actor, scope: str, at):
    """A subject who signed thirty days ago and withdrew ``scope`` at ``at``."""
    subject = f.SubjectFactory(site=site)
    consent_withdraw(
        actor=actor,
        consent=_signed_at(subject, f.days_ago(30)),
        scopes=[scope],
        reason="subject withdraws",
        withdrawn_at=at,
    )
    return subject


def test_it_holds_consent_from_the_exact_instant_of_signature(site_a):
    subject = f.SubjectFactory(site=site_a)
    at = f.days_ago(3)
    _signed_at(subject, at)

    assert consent_allows(subject, "imaging", at=at)
    assert_scope_active(subject, "imaging", at=at)  # does not raise
    assert not consent_allows(subject, "imaging", at=at - TICK)
    with pytest.raises(RuleViolation) as caught:
        assert_scope_active(subject, "imaging", at=at - TICK)
    assert caught.value.code == "consent_missing"


def test_it_ends_consent_at_the_exact_instant_of_withdrawal(site_a, coordinator_a):
    withdrawn = f.days_ago(2)
    subject = _withdrawn(site_a, coordinator_a, "imaging", withdrawn)

    assert not consent_allows(subject, "imaging", at=withdrawn)
    with pytest.raises(RuleViolation) as caught:
        assert_scope_active(subject, "imaging", at=withdrawn)
    assert caught.value.code == "consent_withdrawn"
    assert consent_allows(subject, "imaging", at=withdrawn - TICK)
    assert_scope_active(subject, "imaging", at=withdrawn - TICK)  # does not raise
    assert consent_allows(subject, "longitudinal_imaging", at=withdrawn)  # only the scope withdrawn ends


def _inject(subject, batch, at, *, by, verifier):
    return injection_record(
        actor=verifier,
        subject=subject,
        batch=batch,
        administered_cells=1_000_000,
        volume_ml=Decimal("1.0"),
        route=Injection.Route.INTRAMYOCARDIAL,
        anatomical_target="left ventricle",
        administered_at=at,
        administered_by=by,
        verified_by=verifier,
        verifier_password=f.PASSWORD,
    )


def test_it_records_an_injection_given_at_the_instant_the_consent_was_signed(ready, coordinator_a, investigator_a):
    subject, consent, batch = ready
    at = f.days_ago(1)
    consent.signed_at = at
    consent.save()

    injection = _inject(subject, batch, at, by=investigator_a, verifier=coordinator_a)
    assert Injection.objects.get() == injection


def test_it_refuses_an_injection_given_at_the_instant_of_withdrawal(
    ready, coordinator_a, investigator_a, nothing_written
):
    subject, consent, batch = ready
    at = f.days_ago(1)
    consent_withdraw(
        actor=coordinator_a, consent=consent, scopes=["imaging"], reason="subject withdraws", withdrawn_at=at
    )
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _inject(subject, batch, at, by=investigator_a, verifier=coordinator_a)
    assert caught.value.code == "consent_withdrawn"


def test_the_sponsor_queryset_agrees_with_consent_allows_at_the_instant_of_signature(site_a):
    now = f.days_ago(0)
    signed_now = f.SubjectFactory(site=site_a)
    _signed_at(signed_now, now)
    signed_later = f.SubjectFactory(site=site_a)
    _signed_at(signed_later, now + TICK)
    not_sharing = f.SubjectFactory(site=site_a)
    _signed_at(not_sharing, now - dt.timedelta(days=1), scope_data_sharing=False)

    with mock.patch("django.utils.timezone.now", return_value=now):
        sharing = set(subjects_sharing_data().values_list("id", flat=True))
        for subject in (signed_now, signed_later, not_sharing):
            assert (subject.pk in sharing) == consent_allows(subject, "data_sharing"), subject
    assert sharing == {signed_now.pk}


def test_the_sponsor_queryset_agrees_with_consent_allows_at_the_instant_of_withdrawal(site_a, coordinator_a):
    withdrawn = f.days_ago(1)
    subject = _withdrawn(site_a, coordinator_a, "data_sharing", withdrawn)
    with mock.patch("django.utils.timezone.now", return_value=withdrawn):
        assert not consent_allows(subject, "data_sharing")
        assert subject.pk not in set(subjects_sharing_data().values_list("id", flat=True))
