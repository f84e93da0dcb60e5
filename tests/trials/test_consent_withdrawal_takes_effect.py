"""A withdrawal recorded through the API must actually stop what it withdraws.

Found in review: the consent that speaks for a subject is the latest one signed
(``governing_consent``), so a withdrawal recorded on an older, superseded consent was
accepted (200, audited) and changed nothing; and a re-consent entered with a signature
time before a recorded withdrawal silently undid that withdrawal.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from tests import factories as f
from trials.selectors import consent_allows


def _reconsented(site_a, coordinator_a):
    """A subject who signed v1 fifty days ago and re-consented on v2 ten days ago."""
    subject = f.SubjectFactory(site=site_a)
    old = f.ConsentFactory(subject=subject, obtained_by=coordinator_a, signed_at=f.days_ago(50))
    v2 = f.ConsentDocumentFactory(
        trial=subject.trial, version="2.0", effective_date=timezone.localdate() - dt.timedelta(days=20)
    )
    new = f.ConsentFactory(subject=subject, document=v2, obtained_by=coordinator_a, signed_at=f.days_ago(10))
    return subject, old, new


def test_it_refuses_to_withdraw_from_a_superseded_consent(api, site_a, coordinator_a, nothing_written):
    subject, old, new = _reconsented(site_a, coordinator_a)
    with nothing_written():
        response = api(coordinator_a).post(
            f"/api/v1/consents/{old.pk}/withdraw/",
            {"scopes": ["imaging"], "reason": "subject withdraws"},
            format="json",
        )
    assert response.status_code == 409, response.json()
    assert response.json()["error"]["code"] == "consent_superseded"
    assert f"#{new.pk}" in response.json()["error"]["message"]
    assert consent_allows(subject, "imaging")  # nothing pretended to be withdrawn


def test_it_withdraws_from_the_consent_in_force_and_blocks_injections(api, site_a, coordinator_a, investigator_a):
    subject, old, new = _reconsented(site_a, coordinator_a)
    client = api(coordinator_a)
    response = client.post(
        f"/api/v1/consents/{new.pk}/withdraw/", {"scopes": ["imaging"], "reason": "subject withdraws"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert not consent_allows(subject, "imaging")


def test_it_refuses_a_reconsent_signed_before_a_recorded_withdrawal(api, site_a, coordinator_a, nothing_written):
    subject = f.SubjectFactory(site=site_a)
    consent = f.ConsentFactory(
        subject=subject,
        obtained_by=coordinator_a,
        signed_at=f.days_ago(50),
        withdrawn_at=f.days_ago(5),
        withdrawn_scopes={"imaging": f.days_ago(5).isoformat()},
    )
    assert not consent_allows(subject, "imaging")
    with nothing_written():
        response = api(coordinator_a).post(
            "/api/v1/consents/",
            {
                "subject": subject.pk,
                "document": consent.document_id,
                "scopes": ["imaging"],
                "signed_at": f.days_ago(20).isoformat(),
            },
            format="json",
        )
    assert response.status_code == 409, response.json()
    assert response.json()["error"]["code"] == "signed_before_withdrawal"
    assert not consent_allows(subject, "imaging")


def test_it_accepts_a_reconsent_signed_after_the_withdrawal(api, site_a, coordinator_a):
    subject = f.SubjectFactory(site=site_a)
    consent = f.ConsentFactory(
        subject=subject,
        obtained_by=coordinator_a,
        signed_at=f.days_ago(50),
        withdrawn_at=f.days_ago(5),
        withdrawn_scopes={"imaging": f.days_ago(5).isoformat()},
    )
    response = api(coordinator_a).post(
        "/api/v1/consents/",
        {
            "subject": subject.pk,
            "document": consent.document_id,
            "scopes": ["imaging"],
            "signed_at": f.days_ago(1).isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert consent_allows(subject, "imaging")


def test_it_refuses_a_batch_whose_donor_is_a_subject_of_another_site(site_a, site_b, coordinator_a, nothing_written):
    """Found in review: a coordinator at A who can also see site B (any role there) could
    name a B subject as donor of an A batch: the batch can never be given to its donor
    (injections need the same site), and the service's MRN check on the donor's identity
    became an unaudited oracle on another site's PHI."""
    import pytest

    from config.errors import RuleViolation
    from trials.models import Membership, Role
    from trials.services.batches import batch_register

    Membership.objects.create(user=coordinator_a, trial=site_b.trial, site=site_b, role=Role.IMAGING_STAFF)
    donor = f.SubjectFactory(site=site_b)
    f.SubjectIdentityFactory(subject=donor, medical_record_number="MRN0042137")
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        batch_register(
            actor=coordinator_a,
            site=site_a,
            batch_code="B-1",
            product_type="MSC",
            chain_of_identity_id="COI-MRN0042137",
            donation_id="DIN-1",
            donor_subject=donor,
            manufactured_at=f.days_ago(3),
            cell_count=10**7,
            viability_percent=95,
        )
    assert caught.value.code == "donor_at_other_site"
