"""ICH E6(R3) / Part 11 §11.10(e): every edit of an existing clinical record needs a
reason, and the audit trail keeps the old and the new value. One case per edit service."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.actions import AuditAction
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.services.batches import batch_label, batch_set_release_status
from trials.services.consent import consent_withdraw
from trials.services.identity import subject_identity_set
from trials.services.lots import lot_set_qc_status
from trials.services.subjects import subject_change_status


def _status(c):
    return (
        subject_change_status,
        dict(actor=c.coordinator_a, subject=c.subject, status="completed", confirm=True),
        AuditAction.SUBJECT_STATUS_CHANGED,
        "status",
        "enrolled",
        "completed",
    )


def _identity(c):
    return (
        subject_identity_set,
        dict(
            actor=c.coordinator_a,
            subject=c.subject,
            full_name="Erika Musterfrau",
            date_of_birth=dt.date(1961, 4, 17),
            medical_record_number="MRN0042137",
        ),
        AuditAction.IDENTITY_UPDATED,
        "full_name",
        None,
        None,
    )  # fingerprints, not PHI


def _withdraw(c):
    return (
        consent_withdraw,
        dict(actor=c.coordinator_a, consent=c.consent, scopes=["data_sharing"]),
        AuditAction.CONSENT_WITHDRAWN,
        "withdrawn_at",
        None,
        "*",
    )


def _lot(c):
    return (
        lot_set_qc_status,
        dict(actor=c.trial_manager, lot=c.batch.nanoparticle_lot, qc_status="quarantined"),
        AuditAction.LOT_QC_STATUS_CHANGED,
        "qc_status",
        "released",
        "quarantined",
    )


def _label(c):
    return (
        batch_label,
        dict(
            actor=c.coordinator_a,
            batch=c.unlabelled,
            nanoparticle_lot=c.batch.nanoparticle_lot,
            incubation_concentration_ug_fe_per_ml=Decimal("50"),
            iron_per_cell_pg=Decimal("12.5"),
            labelling_efficiency_percent=Decimal("90"),
            labelled_at=timezone.now() - dt.timedelta(hours=1),
        ),
        AuditAction.BATCH_LABELLED,
        "iron_per_cell_pg",
        None,
        "12.500",
    )


def _release(c):
    return (
        batch_set_release_status,
        dict(actor=c.coordinator_a, batch=c.batch, release_status="rejected", confirm=True),
        AuditAction.BATCH_RELEASE_STATUS_CHANGED,
        "release_status",
        "released",
        "rejected",
    )


EDITS = [_status, _identity, _withdraw, _lot, _label, _release]


@pytest.fixture
def cast(ready, coordinator_a, trial_manager, site_a):
    subject, consent, batch = ready
    unlabelled = f.CellBatchFactory(
        donor_subject=subject, unlabelled=True, manufactured_at=timezone.now() - dt.timedelta(days=2)
    )

    class Cast:
        pass

    c = Cast()
    c.subject, c.consent, c.batch, c.unlabelled, c.coordinator_a = subject, consent, batch, unlabelled, coordinator_a
    c.trial_manager = trial_manager
    return c


@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__.strip("_") for e in EDITS])
def test_it_refuses_an_edit_without_a_reason(cast, edit, nothing_written):
    service, kwargs, *_ = edit(cast)
    for blank in ("", "   "):
        with nothing_written(), pytest.raises(RuleViolation) as refused:
            service(**kwargs, reason=blank)
        assert refused.value.code == "reason_required"


@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__.strip("_") for e in EDITS])
def test_it_keeps_the_reason_and_the_old_and_new_values(cast, edit):
    service, kwargs, action, field, old, new = edit(cast)
    service(**kwargs, reason="source document corrected")
    event = last_event()
    assert event.action == action and event.reason == "source document corrected"
    assert event.actor == kwargs["actor"]
    before, after = event.changes[field]
    assert before != after
    if old is not None or new is not None:
        assert before == old
        assert new == "*" or after == new
