from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.actions import AuditAction
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.services.batches import batch_label


@pytest.fixture
def batch(site_a):
    return f.CellBatchFactory(donor_subject=None, site=site_a, unlabelled=True, manufactured_at=f.days_ago(5))


def _label(actor, batch, lot, **overrides):
    fields = dict(
        incubation_concentration_ug_fe_per_ml=Decimal("50"),
        iron_per_cell_pg=Decimal("11.2"),
        labelling_efficiency_percent=Decimal("96.5"),
        labelled_at=f.days_ago(4),
        reason="labelling done",
    )
    fields.update(overrides)
    return batch_label(actor=actor, batch=batch, nanoparticle_lot=lot, **fields)


def test_it_labels_a_batch_with_a_released_lot(batch, trial, coordinator_a):
    lot = f.NanoparticleLotFactory(trial=trial)
    _label(coordinator_a, batch, lot)

    batch.refresh_from_db()
    assert batch.nanoparticle_lot == lot and batch.iron_per_cell_pg == Decimal("11.2")
    event = last_event()
    assert (event.action, event.actor, event.site_id, event.reason) == (
        AuditAction.BATCH_LABELLED,
        coordinator_a,
        batch.site_id,
        "labelling done",
    )
    assert event.changes["nanoparticle_lot_id"] == [None, lot.pk]
    assert event.changes["iron_per_cell_pg"] == [None, "11.200"]


@pytest.mark.parametrize("qc_status", ["quarantined", "rejected"])
def test_it_refuses_a_lot_that_is_not_released(batch, trial, coordinator_a, nothing_written, qc_status):
    lot = f.NanoparticleLotFactory(trial=trial, qc_status=qc_status)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _label(coordinator_a, batch, lot)
    assert caught.value.code == "lot_not_released"


def test_it_refuses_a_lot_expired_on_the_labelling_day(batch, trial, coordinator_a, nothing_written):
    lot = f.NanoparticleLotFactory(trial=trial, expiry_date=timezone.localdate() - dt.timedelta(days=10))
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _label(coordinator_a, batch, lot)
    assert caught.value.code == "lot_expired"


def test_it_refuses_a_lot_of_another_trial(batch, coordinator_a, nothing_written):
    lot = f.NanoparticleLotFactory()
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _label(coordinator_a, batch, lot)
    assert caught.value.code == "trial_mismatch"


def test_it_refuses_to_label_twice(batch, trial, coordinator_a, nothing_written):
    lot = f.NanoparticleLotFactory(trial=trial)
    _label(coordinator_a, batch, lot)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _label(coordinator_a, batch, lot)
    assert caught.value.code == "batch_already_labelled"


def test_it_requires_a_reason(batch, trial, coordinator_a, nothing_written):
    lot = f.NanoparticleLotFactory(trial=trial)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _label(coordinator_a, batch, lot, reason="")
    assert caught.value.code == "reason_required"


def test_it_refuses_labelling_before_manufacture(batch, trial, coordinator_a, nothing_written):
    lot = f.NanoparticleLotFactory(trial=trial)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _label(coordinator_a, batch, lot, labelled_at=f.days_ago(6))
    assert caught.value.code == "labelled_before_manufacture"
