from __future__ import annotations

import datetime as dt

import pytest

from audit.actions import AuditAction
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.selectors import consent_allows
from trials.services.consent import assert_scope_active, consent_withdraw


@pytest.fixture
def consent(site_a, coordinator_a):
    subject = f.SubjectFactory(site=site_a)
    return f.ConsentFactory(subject=subject, scope_data_sharing=False, signed_at=f.days_ago(30))


def test_it_withdraws_a_scope_with_reason_and_old_and_new_values(consent, coordinator_a):
    when = f.days_ago(5)
    consent_withdraw(
        actor=coordinator_a, consent=consent, scopes=["imaging"], reason="subject no longer wishes", withdrawn_at=when
    )

    consent.refresh_from_db()
    stamp = when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    assert consent.withdrawn_scopes == {"imaging": stamp}
    event = last_event()
    assert (event.action, event.actor, event.subject_id, event.site_id) == (
        AuditAction.CONSENT_WITHDRAWN,
        coordinator_a,
        consent.subject_id,
        consent.subject.site_id,
    )
    assert event.reason == "subject no longer wishes"
    assert event.changes["withdrawn_scopes"] == [{}, {"imaging": stamp}]
    assert event.changes["withdrawn_at"][0] is None


def test_it_blocks_the_withdrawn_scope_from_then_on(consent, coordinator_a):
    subject = consent.subject
    consent_withdraw(
        actor=coordinator_a,
        consent=consent,
        scopes=["imaging"],
        reason="Source document reviewed",
        withdrawn_at=f.days_ago(5),
    )

    assert not consent_allows(subject, "imaging")
    assert consent_allows(subject, "imaging", at=f.days_ago(6))
    assert consent_allows(subject, "longitudinal_imaging")
    with pytest.raises(RuleViolation) as caught:
        assert_scope_active(subject, "imaging")
    assert caught.value.code == "consent_withdrawn"


def test_it_keeps_the_time_of_each_partial_withdrawal(consent, coordinator_a):
    first, second = f.days_ago(5), f.days_ago(2)
    consent_withdraw(
        actor=coordinator_a,
        consent=consent,
        scopes=["longitudinal_imaging"],
        reason="first withdrawal, visit 2",
        withdrawn_at=first,
    )
    consent_withdraw(
        actor=coordinator_a,
        consent=consent,
        scopes=["imaging"],
        reason="second withdrawal, visit 3",
        withdrawn_at=second,
    )

    assert consent_allows(consent.subject, "imaging", at=f.days_ago(3))
    assert not consent_allows(consent.subject, "longitudinal_imaging", at=f.days_ago(3))


def test_it_requires_a_reason(consent, coordinator_a, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_withdraw(actor=coordinator_a, consent=consent, scopes=["imaging"], reason=" ")
    assert caught.value.code == "reason_required"


def test_it_refuses_a_scope_never_granted(consent, coordinator_a, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_withdraw(
            actor=coordinator_a, consent=consent, scopes=["data_sharing"], reason="Source document reviewed"
        )
    assert caught.value.code == "scope_not_granted"


def test_it_refuses_to_withdraw_twice(consent, coordinator_a, nothing_written):
    consent_withdraw(actor=coordinator_a, consent=consent, scopes=["imaging"], reason="Source document reviewed")
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_withdraw(actor=coordinator_a, consent=consent, scopes=["imaging"], reason="Source document reviewed")
    assert caught.value.code == "scope_already_withdrawn"


def test_it_refuses_a_coordinator_of_another_site(consent, coordinator_b, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_withdraw(actor=coordinator_b, consent=consent, scopes=["imaging"], reason="Source document reviewed")
    assert caught.value.code == "forbidden"
