"""A reason goes into the audit trail as the answer to "why did this change?". "0", "x",
"n/a" or "test" answer nothing, so every service that takes a reason refuses them
through one rule (config.reasons.require_reason) with a 400 on the field ``reason``."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from config.api_errors import status_for
from config.errors import RuleViolation
from config.reasons import MIN_REASON_CHARACTERS, require_reason
from imaging.services.scanners import system_matrix_retire
from tests import factories as f
from tests.imaging.factories import ScannerFactory, SystemMatrixFactory
from trials.services.batches import batch_correct, batch_label, batch_set_release_status
from trials.services.consent import consent_correct, consent_withdraw
from trials.services.identity import subject_identity_set
from trials.services.injections import injection_correct
from trials.services.lots import lot_correct, lot_set_qc_status
from trials.services.subjects import subject_change_status, subject_correct

TRIVIAL = [
    "0",
    "x",
    "n/a",
    "N/A",
    "test",
    "-",
    "....",
    "12345678",
    "typo",
    "   x   ",
    "xxxxxxxxxx",
    "none!!",
    "1.0 / 2.0 -> 3",
]


@pytest.mark.parametrize("reason", TRIVIAL)
def test_the_rule_refuses_a_reason_without_substance(reason):
    with pytest.raises(RuleViolation) as caught:
        require_reason(reason)
    assert (caught.value.code, caught.value.field, status_for(caught.value.code)) == (
        "reason_insufficient",
        "reason",
        400,
    )
    assert str(MIN_REASON_CHARACTERS) in caught.value.message


@pytest.mark.parametrize("reason", ["", "  ", None])
def test_the_rule_still_says_a_missing_reason_is_required(reason):
    with pytest.raises(RuleViolation) as caught:
        require_reason(reason)
    assert (caught.value.code, caught.value.field) == ("reason_required", "reason")


@pytest.mark.parametrize(
    "reason",
    [
        "CoA reviewed, sterility passed",
        "Volume misread on the syringe",
        "  date transposed on the CRF  ",
        "Deviation DV-17",
    ],
)
def test_the_rule_keeps_a_substantive_reason_as_given(reason):
    assert require_reason(reason) == reason.strip()


@pytest.fixture
def browser_client(client):
    def make(user):
        client.force_login(user)
        return client

    return make


@pytest.fixture
def records(ready, coordinator_a, investigator_a, trial_manager, site_a):
    subject, consent, batch = ready
    return {
        "subject": subject,
        "consent": consent,
        "batch": batch,
        "lot": batch.nanoparticle_lot,
        "unlabelled": f.CellBatchFactory(donor_subject=subject, unlabelled=True, release_status="pending"),
        "injection": f.InjectionFactory(
            subject=subject, batch=batch, administered_by=coordinator_a, verified_by=investigator_a
        ),
        "system_matrix": SystemMatrixFactory(scanner=ScannerFactory(site=site_a)),
        "coordinator": coordinator_a,
        "trial_manager": trial_manager,
    }


# Every service that takes a reason from a person, called as someone who may.
CALLS = {
    "subject_change_status": lambda r, reason: subject_change_status(
        actor=r["coordinator"], subject=r["subject"], status="screening", reason=reason
    ),
    "subject_correct": lambda r, reason: subject_correct(
        actor=r["coordinator"],
        subject=r["subject"],
        reason=reason,
        enrolment_date=r["subject"].enrolment_date - dt.timedelta(days=1),
    ),
    "subject_identity_set": lambda r, reason: subject_identity_set(
        actor=r["coordinator"],
        subject=r["subject"],
        full_name="Erika Musterfrau",
        date_of_birth=dt.date(1970, 1, 1),
        medical_record_number="MRN0042137",
        reason=reason,
    ),
    "consent_withdraw": lambda r, reason: consent_withdraw(
        actor=r["coordinator"], consent=r["consent"], scopes=["imaging"], reason=reason
    ),
    "consent_correct": lambda r, reason: consent_correct(
        actor=r["coordinator"],
        consent=r["consent"],
        reason=reason,
        signed_at=r["consent"].signed_at - dt.timedelta(hours=1),
    ),
    "lot_set_qc_status": lambda r, reason: lot_set_qc_status(
        actor=r["trial_manager"], lot=r["lot"], qc_status="quarantined", reason=reason
    ),
    "lot_correct": lambda r, reason: lot_correct(
        actor=r["trial_manager"], lot=r["lot"], reason=reason, coating="carboxydextran (corrected)"
    ),
    "batch_label": lambda r, reason: batch_label(
        actor=r["coordinator"],
        batch=r["unlabelled"],
        nanoparticle_lot=r["lot"],
        incubation_concentration_ug_fe_per_ml=Decimal("50"),
        iron_per_cell_pg=Decimal("10"),
        labelling_efficiency_percent=Decimal("90"),
        labelled_at=f.days_ago(1),
        reason=reason,
    ),
    "batch_set_release_status": lambda r, reason: batch_set_release_status(
        actor=r["coordinator"], batch=r["batch"], release_status="pending", reason=reason
    ),
    "batch_correct": lambda r, reason: batch_correct(
        actor=r["coordinator"], batch=r["batch"], reason=reason, viability_percent=Decimal("91.5")
    ),
    "injection_correct": lambda r, reason: injection_correct(
        actor=r["coordinator"], injection=r["injection"], reason=reason, volume_ml=Decimal("1.250")
    ),
    "system_matrix_retire": lambda r, reason: system_matrix_retire(
        actor=r["coordinator"], system_matrix=r["system_matrix"], reason=reason
    ),
}


@pytest.mark.parametrize("reason", ["0", "n/a", "test", "x"])
@pytest.mark.parametrize("service", sorted(CALLS))
def test_every_service_refuses_a_trivial_reason_and_writes_nothing(records, service, reason, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        CALLS[service](records, reason)
    assert (caught.value.code, caught.value.field) == ("reason_insufficient", "reason")
    records["system_matrix"].refresh_from_db()
    assert records["system_matrix"].active


@pytest.mark.parametrize("service", sorted(CALLS))
def test_every_service_accepts_a_substantive_reason(records, service):
    CALLS[service](records, "Source document verified: value was transcribed wrongly")


def test_the_api_answers_400_on_the_reason_field(api, ready, coordinator_a, nothing_written):
    subject = ready[0]
    with nothing_written():
        response = api(coordinator_a).post(
            f"/api/v1/subjects/{subject.pk}/status/", {"status": "screening", "reason": "0"}, format="json"
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "reason_insufficient"
    assert list(error["fields"]) == ["reason"]


def test_the_page_shows_the_refusal_next_to_the_reason(browser_client, ready, coordinator_a, nothing_written):
    subject = ready[0]
    client = browser_client(coordinator_a)
    with nothing_written():
        response = client.post(f"/subjects/{subject.pk}/status/", {"status": "screening", "reason": "n/a"})
    assert response.status_code == 400
    assert "reason" in response.context["form"].errors
