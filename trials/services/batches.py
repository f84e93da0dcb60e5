"""Cell batches: registration, labelling, release, corrections."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import diff
from config.errors import RuleViolation
from config.reasons import require_confirmation
from trials.models import (
    CellBatch,
    NanoparticleLot,
    Site,
    Subject,
    SubjectIdentity,
)
from trials.permissions import access
from trials.selectors import (
    batch_cells_remaining,
)
from trials.services._common import _audit, _local_date, _not_in_future, _require_reason, _snapshot
from trials.services._corrections import _IDS, _apply, _in_range, _positive, _require_change, _require_correctable
from trials.services.lots import _check_lot_usable


def _check_identifiers_free_of_mrn(
    donor_subject: Subject | None, chain_of_identity_id: str, donation_id: str, *, field: str
) -> None:
    # 21 CFR 1271.290: the distinct identifier must not carry a record number.
    if donor_subject is None:
        return
    identity = SubjectIdentity.objects.filter(subject=donor_subject).first()
    mrn = identity.medical_record_number.upper() if identity else ""
    if len(mrn) >= 4 and any(mrn in value.upper() for value in (chain_of_identity_id, donation_id)):
        raise RuleViolation(
            "identifier_contains_phi",
            "The chain-of-identity or donation id contains the donor's medical record number.",
            field=field,
        )


def _check_labelled_after_manufacture(labelled_at: dt.datetime, manufactured_at: dt.datetime, *, field: str) -> None:
    if labelled_at < manufactured_at:
        raise RuleViolation("labelled_before_manufacture", "Labelling cannot precede manufacture.", field=field)


def _check_labelling_lot(lot: NanoparticleLot, batch: CellBatch, labelled_at: dt.datetime) -> None:
    """The lot a batch is labelled with: of the batch's trial, released and unexpired on
    the labelling day (batch_label; batch_correct of the lot or the labelling time)."""
    if lot.trial_id != batch.trial_id:
        raise RuleViolation(
            "trial_mismatch", "The nanoparticle lot is registered for another trial.", field="nanoparticle_lot"
        )
    _check_lot_usable(lot, _local_date(labelled_at, batch.site), field="nanoparticle_lot")


def batch_register(
    *,
    actor,
    site: Site,
    batch_code: str,
    product_type: str,
    chain_of_identity_id: str,
    donation_id: str,
    manufactured_at: dt.datetime,
    cell_count: int,
    viability_percent: Decimal,
    donor_subject: Subject | None = None,
    allogeneic: bool = False,
) -> CellBatch:
    access.require_role(actor, site=site, roles=access.PRODUCT_ROLES, action="register cell batches")
    _not_in_future(manufactured_at, "manufactured_at", "The manufacturing time")
    if donor_subject is not None and donor_subject.site_id != site.pk:
        # Injections need the batch at the recipient's site, and the check below reads the
        # donor's identity: both only make sense for a donor of this site.
        raise RuleViolation(
            "donor_at_other_site",
            f"The donor is not a subject of site {site.code}.",
            field="donor_subject",
        )
    _check_identifiers_free_of_mrn(donor_subject, chain_of_identity_id, donation_id, field="chain_of_identity_id")
    batch = CellBatch(
        trial=site.trial,
        site=site,
        batch_code=batch_code,
        product_type=product_type,
        chain_of_identity_id=chain_of_identity_id,
        donation_id=donation_id,
        donor_subject=donor_subject,
        allogeneic=allogeneic,
        manufactured_at=manufactured_at,
        cell_count=cell_count,
        viability_percent=viability_percent,
    )
    with transaction.atomic():
        batch.full_clean()
        batch.save()
        _audit(
            actor=actor,
            action=AuditAction.BATCH_REGISTERED,
            obj=batch,
            trial_id=batch.trial_id,
            site_id=site.pk,
            subject_id=donor_subject.pk if donor_subject else None,
            changes=diff(None, _snapshot(batch)),
        )
    return batch


# What labelling records (batch_label), and what a correction of the labelling may change.
LABELLING_FIELDS = (
    "nanoparticle_lot",
    "incubation_concentration_ug_fe_per_ml",
    "iron_per_cell_pg",
    "labelling_efficiency_percent",
    "labelled_at",
)


def batch_label(
    *,
    actor,
    batch: CellBatch,
    nanoparticle_lot: NanoparticleLot,
    incubation_concentration_ug_fe_per_ml: Decimal,
    iron_per_cell_pg: Decimal,
    labelling_efficiency_percent: Decimal,
    labelled_at: dt.datetime,
    reason: str,
) -> CellBatch:
    access.require_role(actor, site=batch.site, roles=access.PRODUCT_ROLES, action="record labelling")
    reason = _require_reason(reason)
    _not_in_future(labelled_at, "labelled_at", "The labelling time")
    with transaction.atomic():
        batch = CellBatch.objects.select_for_update(of=("self",)).select_related("site").get(pk=batch.pk)
        if batch.nanoparticle_lot_id is not None:
            raise RuleViolation(
                "batch_already_labelled", f"Batch {batch.batch_code} is already labelled.", field="nanoparticle_lot"
            )
        if batch.release_status == CellBatch.ReleaseStatus.REJECTED:
            raise RuleViolation("batch_rejected", f"Batch {batch.batch_code} was rejected.", field="batch")
        # Judge the lot as it is now, not as the caller last saw it; the lock keeps a
        # concurrent QC change from slipping in between.
        nanoparticle_lot = NanoparticleLot.objects.select_for_update().get(pk=nanoparticle_lot.pk)
        _check_labelling_lot(nanoparticle_lot, batch, labelled_at)
        _check_labelled_after_manufacture(labelled_at, batch.manufactured_at, field="labelled_at")
        before = _snapshot(batch, LABELLING_FIELDS)
        batch.nanoparticle_lot = nanoparticle_lot
        batch.incubation_concentration_ug_fe_per_ml = incubation_concentration_ug_fe_per_ml
        batch.iron_per_cell_pg = iron_per_cell_pg
        batch.labelling_efficiency_percent = labelling_efficiency_percent
        batch.labelled_at = labelled_at
        batch.full_clean()
        batch.save(update_fields=LABELLING_FIELDS)
        _audit(
            actor=actor,
            action=AuditAction.BATCH_LABELLED,
            obj=batch,
            trial_id=batch.trial_id,
            site_id=batch.site_id,
            changes=diff(before, _snapshot(batch, LABELLING_FIELDS)),
            reason=reason,
        )
    return batch


def batch_set_release_status(
    *, actor, batch: CellBatch, release_status: str, reason: str, confirm: bool = False
) -> CellBatch:
    access.require_role(actor, site=batch.site, roles=access.PRODUCT_ROLES, action="release or reject batches")
    reason = _require_reason(reason)
    with transaction.atomic():
        batch = (
            CellBatch.objects.select_for_update(of=("self",))
            .select_related("site", "nanoparticle_lot")
            .get(pk=batch.pk)
        )
        if batch.release_status == CellBatch.ReleaseStatus.REJECTED:
            raise RuleViolation(
                "batch_rejected",
                f"Batch {batch.batch_code} was rejected: a rejection is final.",
                field="release_status",
            )
        if batch.release_status == release_status:
            raise RuleViolation(
                "status_unchanged", f"Batch {batch.batch_code} is already {release_status}.", field="release_status"
            )
        if release_status == CellBatch.ReleaseStatus.RELEASED:
            # The released product is the labelled one, so labelling comes first.
            if batch.nanoparticle_lot is None:
                raise RuleViolation(
                    "batch_not_labelled", f"Batch {batch.batch_code} is not labelled yet.", field="release_status"
                )
            _check_lot_usable(batch.nanoparticle_lot, _local_date(timezone.now(), batch.site), field="release_status")
        if release_status == CellBatch.ReleaseStatus.REJECTED:
            require_confirmation(
                confirm,
                consequences=f"Rejecting batch {batch.batch_code} is final: it can never "
                f"be released again and none of its {batch_cells_remaining(batch):,} remaining "
                "cells can be injected.",
            )
        before = _snapshot(batch, ["release_status"])
        batch.release_status = release_status
        batch.full_clean()
        batch.save(update_fields=["release_status"])
        _audit(
            actor=actor,
            action=AuditAction.BATCH_RELEASE_STATUS_CHANGED,
            obj=batch,
            trial_id=batch.trial_id,
            site_id=batch.site_id,
            changes=diff(before, _snapshot(batch, ["release_status"])),
            reason=reason,
        )
    return batch


# The fields a batch correction may change (the web form offers these; the labelling
# ones only while the batch is labelled and not yet released).
BATCH_CORRECTABLE = (
    "cell_count",
    "viability_percent",
    "manufactured_at",
    "chain_of_identity_id",
    "donation_id",
    *LABELLING_FIELDS,
)


_BATCH_LOCKED = {
    **_IDS,
    "site": "a batch never moves to another site.",
    "batch_code": "the batch code is on the product label; register the right batch instead.",
    "product_type": "a batch of another product is another batch; register it instead.",
    "donor_subject": "the donor is the batch's chain of identity; register the right batch instead.",
    "allogeneic": "the donor is the batch's chain of identity; register the right batch instead.",
    "release_status": "release or reject through its own action (POST .../release/).",
}


def batch_correct(*, actor, batch: CellBatch, reason: str, **fields) -> CellBatch:
    access.require_role(actor, site=batch.site, roles=access.PRODUCT_ROLES, action="correct cell batches")
    reason = _require_reason(reason)
    _require_correctable("cell batch", fields, correctable=BATCH_CORRECTABLE, locked=_BATCH_LOCKED)
    with transaction.atomic():
        batch = (
            CellBatch.objects.select_for_update(of=("self",)).select_related("site", "donor_subject").get(pk=batch.pk)
        )
        injected = batch.cell_count - batch_cells_remaining(batch)
        labelling = [name for name in fields if name in LABELLING_FIELDS]
        if labelling and batch.nanoparticle_lot_id is None:
            raise RuleViolation(
                "batch_not_labelled",
                f"Batch {batch.batch_code} is not labelled: record the "
                "labelling through its own action (POST .../label/).",
                field=labelling[0],
            )
        if labelling and batch.release_status != CellBatch.ReleaseStatus.PENDING:
            raise RuleViolation(
                "labelling_locked",
                f"Batch {batch.batch_code} is {batch.release_status}: its "
                "labelling is what was released or rejected and cannot change.",
                field=labelling[0],
            )
        chain = [name for name in fields if name in ("chain_of_identity_id", "donation_id")]
        if chain and injected:
            raise RuleViolation(
                "chain_of_identity_locked",
                f"Batch {batch.batch_code} has been injected: its "
                "chain-of-identity ids are on the subject's record and cannot change.",
                field=chain[0],
            )
        before = _snapshot(batch, fields)
        _apply(batch, fields)
        changes = _require_change("cell batch", before, _snapshot(batch, fields))
        # The rules of batch_register and batch_label, asked of the values to be stored.
        _not_in_future(batch.manufactured_at, "manufactured_at", "The manufacturing time")
        _positive(batch.cell_count, field="cell_count", what="The cell count")
        if batch.cell_count < injected:
            raise RuleViolation(
                "cell_count_below_injected",
                f"Batch {batch.batch_code} has already given "
                f"{injected:,} cells; the count cannot be corrected to {batch.cell_count:,}.",
                field="cell_count",
            )
        _in_range(batch.viability_percent, 0, 100, field="viability_percent", what="The viability (%)")
        if chain:
            _check_identifiers_free_of_mrn(
                batch.donor_subject, batch.chain_of_identity_id, batch.donation_id, field=chain[0]
            )
        if batch.labelled_at is not None:
            _not_in_future(batch.labelled_at, "labelled_at", "The labelling time")
            _check_labelled_after_manufacture(
                batch.labelled_at,
                batch.manufactured_at,
                field="labelled_at" if "labelled_at" in fields else "manufactured_at",
            )
            _positive(
                batch.incubation_concentration_ug_fe_per_ml,
                field="incubation_concentration_ug_fe_per_ml",
                what="The incubation concentration",
            )
            _positive(batch.iron_per_cell_pg, field="iron_per_cell_pg", what="The iron per cell")
            _in_range(
                batch.labelling_efficiency_percent,
                0,
                100,
                field="labelling_efficiency_percent",
                what="The labelling efficiency (%)",
            )
        if "nanoparticle_lot" in fields or "labelled_at" in fields:
            if batch.nanoparticle_lot_id is None or batch.labelled_at is None:  # refused above: not labelled
                raise RuntimeError(f"batch {batch.pk} is corrected as labelled without its lot or labelling time")
            lot = NanoparticleLot.objects.select_for_update().get(pk=batch.nanoparticle_lot_id)
            _check_labelling_lot(lot, batch, batch.labelled_at)
        if "labelled_at" in fields and batch.injections.filter(administered_at__lt=batch.labelled_at).exists():
            # Only reachable for a batch released, injected, then set back to pending.
            raise RuleViolation(
                "administered_before_labelling",
                f"Batch {batch.batch_code} was injected before the corrected labelling time.",
                field="labelled_at",
            )
        batch.full_clean()
        batch.save(update_fields=list(fields))
        _audit(
            actor=actor,
            action=AuditAction.BATCH_UPDATED,
            obj=batch,
            trial_id=batch.trial_id,
            site_id=batch.site_id,
            changes=changes,
            reason=reason,
        )
    return batch
