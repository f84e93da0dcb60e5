from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from audit.actions import AuditAction
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.models import NanoparticleLot
from trials.services.batches import batch_set_release_status


def test_it_releases_a_labelled_batch_with_reason_and_old_and_new_status(site_a, coordinator_a):
    batch = f.CellBatchFactory(donor_subject=None, site=site_a, release_status="pending")
    batch_set_release_status(actor=coordinator_a, batch=batch, release_status="released", reason="QC passed")
    batch.refresh_from_db()
    assert batch.release_status == "released"
    event = last_event()
    assert (event.action, event.actor, event.site_id, event.reason) == (
        AuditAction.BATCH_RELEASE_STATUS_CHANGED,
        coordinator_a,
        site_a.pk,
        "QC passed",
    )
    assert event.changes == {"release_status": ["pending", "released"]}


def test_it_refuses_to_release_an_unlabelled_batch(site_a, coordinator_a, nothing_written):
    batch = f.CellBatchFactory(donor_subject=None, site=site_a, unlabelled=True)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        batch_set_release_status(
            actor=coordinator_a, batch=batch, release_status="released", reason="Source document reviewed"
        )
    assert caught.value.code == "batch_not_labelled"


def test_it_refuses_to_release_a_batch_whose_lot_has_expired(site_a, coordinator_a, nothing_written):
    batch = f.CellBatchFactory(donor_subject=None, site=site_a, release_status="pending")
    NanoparticleLot.objects.filter(pk=batch.nanoparticle_lot_id).update(
        expiry_date=timezone.localdate() - dt.timedelta(days=1)
    )
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        batch_set_release_status(
            actor=coordinator_a, batch=batch, release_status="released", reason="Source document reviewed"
        )
    assert caught.value.code == "lot_expired"


def test_it_keeps_a_rejection_final(site_a, coordinator_a, nothing_written):
    batch = f.CellBatchFactory(donor_subject=None, site=site_a, release_status="rejected")
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        batch_set_release_status(
            actor=coordinator_a, batch=batch, release_status="released", reason="Source document reviewed"
        )
    assert caught.value.code == "batch_rejected"


def test_it_requires_a_reason(site_a, coordinator_a, nothing_written):
    batch = f.CellBatchFactory(donor_subject=None, site=site_a, release_status="pending")
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        batch_set_release_status(actor=coordinator_a, batch=batch, release_status="rejected", reason="")
    assert caught.value.code == "reason_required"
