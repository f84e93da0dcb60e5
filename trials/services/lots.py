"""Nanoparticle lots: registration, QC status, usability on a day, corrections."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import diff
from config.errors import RuleViolation
from config.reasons import require_confirmation
from trials.models import (
    NanoparticleLot,
    Trial,
    iron_mg_per_ml_from_mmol_per_l,
    iron_mmol_per_l_disagreeing,
    iron_mmol_per_l_from_mg_per_ml,
)
from trials.permissions import access
from trials.services._common import _audit, _local_date, _require_reason, _snapshot, sha256_of
from trials.services._corrections import _IDS, _apply, _in_range, _positive, _require_change, _require_correctable


def _iron_concentrations(mg_per_ml: Decimal | None, mmol_per_l: Decimal | None) -> tuple[Decimal, Decimal]:
    # One is computed from the other (55.845 g/mol), so the two never disagree; when
    # both are given, clean() checks they agree (iron_mmol_per_l_disagreeing).
    if mg_per_ml is not None:
        return mg_per_ml, mmol_per_l if mmol_per_l is not None else iron_mmol_per_l_from_mg_per_ml(mg_per_ml)
    if mmol_per_l is not None:
        return iron_mg_per_ml_from_mmol_per_l(mmol_per_l), mmol_per_l
    raise RuleViolation(
        "iron_concentration_missing",
        "Give the iron concentration in mg Fe/mL or mmol/L.",
        field="iron_mg_per_ml",
    )


def _check_lot_values(lot: NanoparticleLot) -> None:
    """The lot's check constraints, asked first in plain words next to their field (the
    database's constraint names are never what a person reads): registration and correction."""
    _positive(lot.iron_mg_per_ml, field="iron_mg_per_ml", what="The iron concentration")
    _positive(lot.iron_mmol_per_l, field="iron_mmol_per_l", what="The iron concentration")
    _positive(lot.core_size_nm, field="core_size_nm", what="The core size")
    _positive(lot.hydrodynamic_size_nm, field="hydrodynamic_size_nm", what="The hydrodynamic size")
    expected = iron_mmol_per_l_disagreeing(lot.iron_mg_per_ml, lot.iron_mmol_per_l)
    if expected is not None:
        raise RuleViolation(
            "iron_concentrations_disagree",
            f"{lot.iron_mmol_per_l} mmol/L disagrees with "
            f"{lot.iron_mg_per_ml} mg Fe/mL (expected {expected} mmol/L at 55.845 g/mol).",
            field="iron_mmol_per_l",
        )
    if None not in (lot.hydrodynamic_size_nm, lot.core_size_nm) and lot.hydrodynamic_size_nm < lot.core_size_nm:
        raise RuleViolation(
            "hydrodynamic_smaller_than_core",
            f"The hydrodynamic size ({lot.hydrodynamic_size_nm} "
            f"nm) cannot be smaller than the core ({lot.core_size_nm} nm).",
            field="hydrodynamic_size_nm",
        )
    _in_range(lot.polydispersity_index, 0, 1, field="polydispersity_index", what="The polydispersity index")


def _lot_number_taken(manufacturer: str, lot_number: str) -> RuleViolation:
    return RuleViolation(
        "lot_number_taken",
        f"{manufacturer} lot {lot_number} is already registered: a lot is registered once for the whole trial.",
        field="lot_number",
    )


def _trial_today(trial: Trial) -> dt.date:
    # The lot serves every site of the trial: it must be in date at the site where the
    # day is furthest along (the platform's own date when the trial has no site yet).
    now = timezone.now()
    return max((_local_date(now, site) for site in trial.sites.all()), default=timezone.localdate())


def lot_register(
    *,
    actor,
    trial: Trial,
    manufacturer: str,
    product: str,
    lot_number: str,
    expiry_date: dt.date,
    core_size_nm: Decimal,
    hydrodynamic_size_nm: Decimal,
    polydispersity_index: Decimal,
    coating: str,
    certificate_of_analysis,
    iron_mg_per_ml: Decimal | None = None,
    iron_mmol_per_l: Decimal | None = None,
) -> NanoparticleLot:
    access.require_trial_role(
        actor, trial=trial, roles=access.TRIAL_RESOURCE_ROLES, action="register nanoparticle lots"
    )
    iron_mg_per_ml, iron_mmol_per_l = _iron_concentrations(iron_mg_per_ml, iron_mmol_per_l)
    if expiry_date < (today := _trial_today(trial)):
        # Registered to be used: a lot already past its expiry could never label a batch.
        raise RuleViolation(
            "lot_expired",
            f"Lot {lot_number} expired on {expiry_date}, before today ({today}): an expired lot is not registered.",
            field="expiry_date",
        )
    lot = NanoparticleLot(
        trial=trial,
        manufacturer=manufacturer,
        product=product,
        lot_number=lot_number,
        expiry_date=expiry_date,
        iron_mg_per_ml=iron_mg_per_ml,
        iron_mmol_per_l=iron_mmol_per_l,
        core_size_nm=core_size_nm,
        hydrodynamic_size_nm=hydrodynamic_size_nm,
        polydispersity_index=polydispersity_index,
        coating=coating,
        certificate_of_analysis=certificate_of_analysis,
        certificate_sha256=sha256_of(certificate_of_analysis),
        qc_status=NanoparticleLot.QcStatus.QUARANTINED,  # every lot waits for QC release
    )
    _check_lot_values(lot)
    if NanoparticleLot.objects.filter(manufacturer=manufacturer, lot_number=lot_number).exists():
        raise _lot_number_taken(manufacturer, lot_number)
    try:
        with transaction.atomic():
            lot.full_clean()
            lot.save()
            _audit(
                actor=actor,
                action=AuditAction.LOT_REGISTERED,
                obj=lot,
                trial_id=trial.pk,
                changes=diff(None, _snapshot(lot)),
            )
    except IntegrityError as exc:  # registered by someone else since the check above
        raise _lot_number_taken(manufacturer, lot_number) from exc
    return lot


def lot_set_qc_status(
    *, actor, lot: NanoparticleLot, qc_status: str, reason: str, confirm: bool = False
) -> NanoparticleLot:
    # A lot is shared by every site's batches: only a trial-level role may block or release it.
    access.require_trial_role(
        actor, trial=lot.trial, roles=access.TRIAL_RESOURCE_ROLES, action="change a lot's QC status"
    )
    reason = _require_reason(reason)
    with transaction.atomic():
        lot = NanoparticleLot.objects.select_for_update().get(pk=lot.pk)
        if lot.qc_status == NanoparticleLot.QcStatus.REJECTED:
            raise RuleViolation(
                "lot_rejected", f"Lot {lot.lot_number} was rejected: a rejection is final.", field="qc_status"
            )
        if lot.qc_status == qc_status:
            raise RuleViolation("status_unchanged", f"Lot {lot.lot_number} is already {qc_status}.", field="qc_status")
        if qc_status == NanoparticleLot.QcStatus.RELEASED and lot.expiry_date < timezone.localdate():
            raise RuleViolation("lot_expired", f"Lot {lot.lot_number} expired on {lot.expiry_date}.", field="qc_status")
        if qc_status == NanoparticleLot.QcStatus.REJECTED:
            batches = lot.labelled_batches.count()
            require_confirmation(
                confirm,
                consequences=f"Rejecting lot {lot.lot_number} is final: it can never be "
                f"released again, and the {batches} batch(es) labelled with it at every site can "
                "no longer be released or injected.",
            )
        before = _snapshot(lot, ["qc_status"])
        lot.qc_status = qc_status
        lot.full_clean()
        lot.save(update_fields=["qc_status"])
        _audit(
            actor=actor,
            action=AuditAction.LOT_QC_STATUS_CHANGED,
            obj=lot,
            trial_id=lot.trial_id,
            changes=diff(before, _snapshot(lot, ["qc_status"])),
            reason=reason,
        )
    return lot


def usable_lots(on: dt.date, *, prefix: str = "") -> Q:
    """The lots ``_check_lot_usable`` lets through on a day, as a query (``prefix``: the path
    from another model, "nanoparticle_lot__"): what a form offers is what the service accepts."""
    return Q(**{f"{prefix}qc_status": NanoparticleLot.QcStatus.RELEASED, f"{prefix}expiry_date__gte": on})


def _check_lot_usable(lot: NanoparticleLot, on: dt.date, *, field: str) -> None:
    if lot.qc_status != NanoparticleLot.QcStatus.RELEASED:
        raise RuleViolation(
            "lot_not_released", f"Nanoparticle lot {lot.lot_number} is {lot.qc_status}, not released.", field=field
        )
    _check_lot_unexpired(lot, on, field=field)


def _check_lot_unexpired(lot: NanoparticleLot, on: dt.date, *, field: str) -> None:
    if lot.expiry_date < on:
        raise RuleViolation(
            "lot_expired", f"Nanoparticle lot {lot.lot_number} expired on {lot.expiry_date}.", field=field
        )


# The fields a lot correction may change (the web form offers these).
LOT_CORRECTABLE = (
    "expiry_date",
    "iron_mg_per_ml",
    "iron_mmol_per_l",
    "core_size_nm",
    "hydrodynamic_size_nm",
    "polydispersity_index",
    "coating",
)


_LOT_LOCKED = {
    **_IDS,
    "manufacturer": "manufacturer and lot number identify the lot; register the right lot instead.",
    "product": "the product identifies the lot; register the right lot instead.",
    "lot_number": "manufacturer and lot number identify the lot; register the right lot instead.",
    "certificate_of_analysis": "the certificate and its SHA-256 are the record of analysis; register the right lot.",
    "certificate_sha256": "it is computed from the certificate.",
    "qc_status": "change the QC status through its own action (POST .../qc-status/).",
}


def lot_correct(*, actor, lot: NanoparticleLot, reason: str, **fields) -> NanoparticleLot:
    access.require_trial_role(
        actor, trial=lot.trial, roles=access.TRIAL_RESOURCE_ROLES, action="correct nanoparticle lots"
    )
    reason = _require_reason(reason)
    _require_correctable("nanoparticle lot", fields, correctable=LOT_CORRECTABLE, locked=_LOT_LOCKED)
    fields = dict(fields)
    # A correction of one concentration recomputes the other, as registration does.
    given = [name for name in ("iron_mg_per_ml", "iron_mmol_per_l") if name in fields]
    if len(given) == 1:
        _positive(fields[given[0]], field=given[0], what="The iron concentration")
        fields["iron_mg_per_ml"], fields["iron_mmol_per_l"] = _iron_concentrations(
            fields.get("iron_mg_per_ml"), fields.get("iron_mmol_per_l")
        )
    with transaction.atomic():
        lot = NanoparticleLot.objects.select_for_update().get(pk=lot.pk)
        before = _snapshot(lot, fields)
        _apply(lot, fields)
        changes = _require_change("nanoparticle lot", before, _snapshot(lot, fields))
        _check_lot_values(lot)
        if "expiry_date" in fields:
            _lot_expiry_covers_use(lot)
        lot.full_clean()
        lot.save(update_fields=list(fields))
        _audit(
            actor=actor, action=AuditAction.LOT_UPDATED, obj=lot, trial_id=lot.trial_id, changes=changes, reason=reason
        )
    return lot


def _lot_expiry_covers_use(lot: NanoparticleLot) -> None:
    # batch_label and injection_record refuse an expired lot; a corrected expiry must not
    # make a labelling or an injection already recorded one that would have been refused.
    for batch in lot.labelled_batches.select_related("site").prefetch_related("injections"):
        used = [batch.labelled_at, *(i.administered_at for i in batch.injections.all())]
        last = max(_local_date(t, batch.site) for t in used if t is not None)
        if last > lot.expiry_date:
            raise RuleViolation(
                "lot_expiry_before_use",
                f"Lot {lot.lot_number} was used for batch {batch.batch_code} "
                f"on {last}, after the corrected expiry {lot.expiry_date}.",
                field="expiry_date",
            )
