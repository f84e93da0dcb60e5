"""batch_correct: counts, viability, times, chain-of-identity ids (until the first
injection) and labelling values (while pending) are correctable with a reason."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.actions import AuditAction
from config.api_errors import status_for
from tests import factories as f
from tests.trials.corrections import head_sequence, one_event_since, refused
from trials.models import CellBatch, NanoparticleLot
from trials.services.batches import batch_correct


@pytest.fixture
def donor(site_a):
    subject = f.SubjectFactory(site=site_a)
    f.SubjectIdentityFactory(subject=subject, medical_record_number="MRN0042137")
    return subject


@pytest.fixture
def pending(donor):
    """Labelled, not yet released."""
    return f.CellBatchFactory(donor_subject=donor, release_status=CellBatch.ReleaseStatus.PENDING)


@pytest.fixture
def released(donor):
    return f.CellBatchFactory(donor_subject=donor)


def _correct(actor, batch, reason="counting sheet transcribed wrongly", **fields):
    return batch_correct(actor=actor, batch=batch, reason=reason, **fields)


def _refused(code, nothing_written, actor, batch, **fields):
    return refused(code, nothing_written, _correct, batch, actor=actor, batch=batch, **fields)


def test_it_corrects_count_and_viability_with_one_audit_event(released, coordinator_a):
    start = head_sequence()
    _correct(coordinator_a, released, cell_count=120_000_000, viability_percent=Decimal("91.2"))

    released.refresh_from_db()
    assert (released.cell_count, released.viability_percent) == (120_000_000, Decimal("91.20"))
    event = one_event_since(start)
    assert (event.action, event.actor, event.site_id, event.object_id) == (
        AuditAction.BATCH_UPDATED,
        coordinator_a,
        released.site_id,
        str(released.pk),
    )
    assert event.changes == {"cell_count": [100_000_000, 120_000_000], "viability_percent": ["92.50", "91.20"]}
    assert event.reason == "counting sheet transcribed wrongly"


def test_it_corrects_labelling_values_while_pending(pending, coordinator_a):
    start = head_sequence()
    _correct(coordinator_a, pending, iron_per_cell_pg=Decimal("15.2"), labelling_efficiency_percent=Decimal("97"))
    assert one_event_since(start).changes == {
        "iron_per_cell_pg": ["12.500", "15.200"],
        "labelling_efficiency_percent": ["95.00", "97.00"],
    }


def test_it_corrects_the_lot_while_pending(pending, coordinator_a):
    other = f.NanoparticleLotFactory(trial=pending.trial)
    _correct(coordinator_a, pending, nanoparticle_lot=other)
    pending.refresh_from_db()
    assert pending.nanoparticle_lot == other


def test_it_refuses_an_unreleased_lot(pending, coordinator_a, nothing_written):
    other = f.NanoparticleLotFactory(trial=pending.trial, qc_status=NanoparticleLot.QcStatus.QUARANTINED)
    _refused("lot_not_released", nothing_written, coordinator_a, pending, nanoparticle_lot=other)


def test_it_locks_the_labelling_of_a_released_batch(released, coordinator_a, nothing_written):
    _refused("labelling_locked", nothing_written, coordinator_a, released, iron_per_cell_pg=Decimal("15.2"))


def test_it_sends_an_unlabelled_batch_to_the_label_action(donor, coordinator_a, nothing_written):
    batch = f.CellBatchFactory(donor_subject=donor, unlabelled=True)
    _refused("batch_not_labelled", nothing_written, coordinator_a, batch, labelled_at=f.days_ago(1))


@pytest.mark.parametrize(
    "field,value",
    [
        ("viability_percent", Decimal("100.01")),
        ("viability_percent", Decimal("-1")),
        ("labelling_efficiency_percent", Decimal("101")),
    ],
)
def test_it_refuses_percentages_outside_0_to_100(pending, coordinator_a, nothing_written, field, value):
    _refused(f"{field}_out_of_range", nothing_written, coordinator_a, pending, **{field: value})


def test_it_refuses_a_count_below_the_cells_already_given(
    released, donor, coordinator_a, investigator_a, nothing_written
):
    f.InjectionFactory(
        batch=released,
        subject=donor,
        administered_cells=30_000_000,
        administered_by=investigator_a,
        verified_by=coordinator_a,
    )
    _refused("cell_count_below_injected", nothing_written, coordinator_a, released, cell_count=29_999_999)


def test_it_corrects_the_chain_of_identity_before_the_first_injection(released, coordinator_a):
    _correct(coordinator_a, released, chain_of_identity_id="W123426999999-CT01")
    released.refresh_from_db()
    assert released.chain_of_identity_id == "W123426999999-CT01"


def test_it_locks_the_chain_of_identity_once_injected(released, donor, coordinator_a, investigator_a, nothing_written):
    f.InjectionFactory(batch=released, subject=donor, administered_by=investigator_a, verified_by=coordinator_a)
    _refused("chain_of_identity_locked", nothing_written, coordinator_a, released, donation_id="W123426999999")


def test_it_refuses_a_chain_of_identity_id_carrying_the_donors_record_number(released, coordinator_a, nothing_written):
    _refused("identifier_contains_phi", nothing_written, coordinator_a, released, chain_of_identity_id="MRN0042137")


def test_it_refuses_labelling_before_manufacture(pending, coordinator_a, nothing_written):
    _refused(
        "labelled_before_manufacture",
        nothing_written,
        coordinator_a,
        pending,
        manufactured_at=pending.labelled_at + dt.timedelta(minutes=1),
    )


def test_it_refuses_a_manufacturing_time_in_the_future(pending, coordinator_a, nothing_written):
    _refused(
        "manufactured_at_in_future",
        nothing_written,
        coordinator_a,
        pending,
        manufactured_at=timezone.now() + dt.timedelta(hours=1),
    )


@pytest.mark.parametrize(
    "field", ["batch_code", "site", "donor_subject", "allogeneic", "product_type", "release_status", "trial"]
)
def test_it_refuses_fields_that_may_not_be_corrected(released, coordinator_a, nothing_written, field):
    _refused(f"{field}_not_correctable", nothing_written, coordinator_a, released, **{field: None})


@pytest.mark.parametrize("reason", ["", None])
def test_it_requires_a_reason(released, coordinator_a, nothing_written, reason):
    _refused("reason_required", nothing_written, coordinator_a, released, reason=reason, cell_count=1)


def test_it_refuses_a_correction_that_changes_nothing(released, coordinator_a, nothing_written):
    _refused("no_change", nothing_written, coordinator_a, released, cell_count=100_000_000)


@pytest.mark.parametrize("who", ["imaging_a", "investigator_a", "coordinator_b", "monitor", "sponsor"])
def test_it_lets_only_a_coordinator_of_the_site_correct(request, released, nothing_written, who):
    error = _refused("forbidden", nothing_written, request.getfixturevalue(who), released, cell_count=1)
    assert status_for(error.code) == 403


# --------------------------------------------------------------------------- API


def _url(batch):
    return reverse("cell-batch-detail", kwargs={"pk": batch.pk})


def test_it_corrects_through_the_api(api, released, coordinator_a):
    response = api(coordinator_a).patch(
        _url(released), {"cell_count": 120_000_000, "reason": "cells recounted on the sheet"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert (response.json()["cell_count"], response.json()["cells_remaining"]) == (120_000_000, 120_000_000)


# The subject has no data-sharing consent, so it is outside the sponsor's view: 404.
@pytest.mark.parametrize("who,status", [("coordinator_b", 404), ("monitor", 403), ("sponsor", 404)])
def test_it_validates_ownership(request, api, released, nothing_written, who, status):
    client = api(request.getfixturevalue(who))
    with nothing_written():
        response = client.patch(
            _url(released), {"cell_count": 1, "reason": "typo on the CRF, source checked"}, format="json"
        )
    assert response.status_code == status
    released.refresh_from_db()
    assert released.cell_count == 100_000_000


def test_it_refuses_a_labelling_time_after_an_injection_from_the_batch(
    released, donor, coordinator_a, investigator_a, nothing_written
):
    f.InjectionFactory(
        batch=released,
        subject=donor,
        administered_at=f.days_ago(10),
        administered_by=investigator_a,
        verified_by=coordinator_a,
    )
    CellBatch.objects.filter(pk=released.pk).update(release_status=CellBatch.ReleaseStatus.PENDING)
    _refused("administered_before_labelling", nothing_written, coordinator_a, released, labelled_at=f.days_ago(9))
