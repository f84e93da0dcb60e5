from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from audit.actions import AuditAction
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.services.lots import lot_set_qc_status


@pytest.fixture
def lot(trial):
    return f.NanoparticleLotFactory(trial=trial, qc_status="quarantined")


def test_it_releases_a_lot_with_reason_and_old_and_new_status(lot, trial_manager):
    lot_set_qc_status(actor=trial_manager, lot=lot, qc_status="released", reason="CoA reviewed, sterility passed")
    lot.refresh_from_db()
    assert lot.qc_status == "released"
    event = last_event()
    assert (event.action, event.actor, event.object_id) == (
        AuditAction.LOT_QC_STATUS_CHANGED,
        trial_manager,
        str(lot.pk),
    )
    assert event.changes == {"qc_status": ["quarantined", "released"]}
    assert event.reason == "CoA reviewed, sterility passed"


def test_it_requires_a_reason(lot, trial_manager, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        lot_set_qc_status(actor=trial_manager, lot=lot, qc_status="released", reason="")
    assert caught.value.code == "reason_required"


def test_it_keeps_a_rejection_final(trial, trial_manager, nothing_written):
    lot = f.NanoparticleLotFactory(trial=trial, qc_status="rejected")
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        lot_set_qc_status(actor=trial_manager, lot=lot, qc_status="released", reason="second look")
    assert caught.value.code == "lot_rejected"


def test_it_refuses_to_release_an_expired_lot(trial, trial_manager, nothing_written):
    lot = f.NanoparticleLotFactory(
        trial=trial, qc_status="quarantined", expiry_date=timezone.localdate() - dt.timedelta(days=1)
    )
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        lot_set_qc_status(actor=trial_manager, lot=lot, qc_status="released", reason="Source document reviewed")
    assert caught.value.code == "lot_expired"


def test_it_refuses_imaging_staff(lot, imaging_a, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        lot_set_qc_status(actor=imaging_a, lot=lot, qc_status="released", reason="Source document reviewed")
    assert caught.value.code == "forbidden"
