from __future__ import annotations

import pytest

from config.errors import RuleViolation
from tests import factories as f
from trials.selectors import consent_allows
from trials.services.consent import assert_scope_active


def test_it_allows_nothing_without_a_consent(site_a):
    subject = f.SubjectFactory(site=site_a)
    assert not consent_allows(subject, "imaging")
    with pytest.raises(RuleViolation) as caught:
        assert_scope_active(subject, "imaging")
    assert caught.value.code == "consent_missing"


def test_it_follows_the_latest_signature(site_a):
    subject = f.SubjectFactory(site=site_a)
    f.ConsentFactory(subject=subject, scope_data_sharing=True, signed_at=f.days_ago(40))
    # Re-consent on a later version, without data sharing this time.
    f.ConsentFactory(subject=subject, scope_data_sharing=False, signed_at=f.days_ago(10))

    assert consent_allows(subject, "data_sharing", at=f.days_ago(20))
    assert not consent_allows(subject, "data_sharing")
    assert consent_allows(subject, "imaging")


def test_it_refuses_an_unknown_scope(site_a):
    with pytest.raises(ValueError, match="is not a valid ConsentScope"):
        consent_allows(f.SubjectFactory(site=site_a), "telepathy")
