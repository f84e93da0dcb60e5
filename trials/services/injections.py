"""Injections: recording (four eyes, verifier's password, cells available) and corrections."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import transaction
from django.db.models import Q

from audit import credentials
from audit.actions import AuditAction
from audit.chain import diff, record_event
from config.errors import RuleViolation
from trials.models import (
    CellBatch,
    ConsentScope,
    Injection,
    Site,
    Subject,
)
from trials.permissions import access
from trials.selectors import (
    batch_cells_remaining,
)
from trials.services._common import (
    _audit,
    _local_date,
    _not_in_future,
    _require_reason,
    _signed_visit_changed,
    _snapshot,
)
from trials.services._corrections import (
    _IDS,
    _apply,
    _not_negative,
    _positive,
    _require_change,
    _require_correctable,
)
from trials.services.consent import assert_scope_active
from trials.services.lots import _check_lot_unexpired, _check_lot_usable, usable_lots

PLANNED_DURATION = "The planned duration of the administration (s)"


def _require_clinical_member(user, site: Site, field: str, who: str) -> None:
    if not access.roles_at(user, site) & {str(r) for r in access.CLINICAL_ROLES}:
        raise RuleViolation(
            f"{field}_not_at_site", f"The {who} must be a coordinator or investigator at site {site.code}.", field=field
        )


def _require_four_eyes(site: Site, *, administered_by, verified_by) -> None:
    """Two different people, both clinical staff at the site."""
    if administered_by is not None and verified_by is not None and administered_by.pk == verified_by.pk:
        raise RuleViolation(
            "verifier_is_administrator",
            "The verifier must be someone other than the administrator.",
            field="verified_by",
        )
    _require_clinical_member(administered_by, site, "administered_by", "administrator")
    _require_clinical_member(verified_by, site, "verified_by", "verifier")


def _require_verifier_password(*, actor, subject: Subject, batch: CellBatch, verifier, password: str) -> None:
    """The second person proves they are there: their password, counted toward their
    lockout like a sign-in. A refusal is audited (its own transaction) and nothing else
    is written."""
    check = credentials.password_check(user=verifier, password=password, via=credentials.INJECTION_VERIFIER)
    if check.confirmed:
        return
    with transaction.atomic():
        record_event(
            actor=actor,
            action=AuditAction.INJECTION_VERIFICATION_REFUSED,
            object_type="trials.injection",
            object_id="",
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes={
                "verifier": verifier.get_username(),
                "batch": batch.pk,
                "why": "account locked" if check.locked else "wrong password",
            },
        )
    if check.locked:
        raise RuleViolation(
            check.code,
            f"The verifier {verifier.get_username()} cannot confirm: {check.message} Nothing was recorded.",
            field="verifier_password",
        )
    raise RuleViolation(
        "verifier_password_wrong",
        "The verifier's password is wrong: nothing was recorded.",
        field="verifier_password",
    )


def _check_administered_after_labelling(batch: CellBatch, administered_at: dt.datetime) -> None:
    if batch.labelled_at is not None and administered_at < batch.labelled_at:
        raise RuleViolation(
            "administered_before_labelling",
            "The injection cannot precede the labelling.",
            field="administered_at",
        )


def _check_cells_available(batch: CellBatch, requested: int, *, correcting: int | None = None) -> None:
    """The batch (locked by the caller) holds ``requested`` cells. ``correcting``: the
    count the corrected injection holds now, which is its own to keep."""
    left = batch_cells_remaining(batch) + (correcting or 0)
    if requested > left:
        what = "cells left" if correcting is None else "cells for this injection once the others are counted"
        raise RuleViolation(
            "insufficient_cells",
            f"Batch {batch.batch_code} has {left:,} {what}; {requested:,} requested.",
            field="administered_cells",
        )


def injectable_batches(subject: Subject, on: dt.date) -> Q:
    """The batches ``injection_record`` accepts for ``subject`` on a day, as a query (the
    checks below, one by one, say why another batch is refused): the injection form offers these."""
    return (
        Q(trial_id=subject.trial_id, site_id=subject.site_id, release_status=CellBatch.ReleaseStatus.RELEASED)
        & (Q(allogeneic=True) | Q(donor_subject_id=subject.pk))
        & usable_lots(on, prefix="nanoparticle_lot__")
    )


def injection_record(
    *,
    actor,
    subject: Subject,
    batch: CellBatch,
    administered_cells: int,
    volume_ml: Decimal,
    route: str,
    anatomical_target: str,
    administered_at: dt.datetime,
    administered_by,
    verified_by,
    verifier_password: str,
    planned_duration_s: Decimal | None = None,
) -> Injection:
    """Record an injection; ``verified_by`` confirms the dose with their own password
    (four eyes), checked here so that every interface asks for it. ``planned_duration_s``:
    the planned duration of the administration in seconds (0: a bolus; None: not given,
    the platform default applies, ``live.dose.planned_duration``)."""
    site = subject.site
    access.require_role(actor, site=site, roles=access.INJECTION_ROLES, action="record injections")
    _not_in_future(administered_at, "administered_at", "The administration time")
    _not_negative(planned_duration_s, field="planned_duration_s", what=PLANNED_DURATION)
    _require_four_eyes(site, administered_by=administered_by, verified_by=verified_by)
    if subject.status != Subject.Status.ENROLLED:
        raise RuleViolation(
            "subject_not_enrolled", f"Subject {subject.code} is {subject.status}, not enrolled.", field="subject"
        )
    _require_verifier_password(
        actor=actor, subject=subject, batch=batch, verifier=verified_by, password=verifier_password
    )
    with transaction.atomic():
        # The lock makes "cells remaining" exact: a second injection from this batch
        # waits here until the first one commits.
        batch = CellBatch.objects.select_for_update(of=("self",)).select_related("nanoparticle_lot").get(pk=batch.pk)
        # Consent is read inside the transaction, next to the write it allows.
        assert_scope_active(subject, ConsentScope.IMAGING, at=administered_at)
        if batch.trial_id != subject.trial_id:
            raise RuleViolation("trial_mismatch", "The batch belongs to another trial.", field="batch")
        if batch.site_id != subject.site_id:
            raise RuleViolation(
                "batch_site_mismatch", f"Batch {batch.batch_code} is not held at site {site.code}.", field="batch"
            )
        if not batch.allogeneic and batch.donor_subject_id != subject.pk:
            raise RuleViolation(
                "autologous_mismatch",
                f"Batch {batch.batch_code} is autologous: it may only be given to its own donor.",
                field="batch",
            )
        if batch.release_status != CellBatch.ReleaseStatus.RELEASED:
            raise RuleViolation(
                "batch_not_released",
                f"Batch {batch.batch_code} is {batch.release_status}, not released.",
                field="batch",
            )
        if batch.nanoparticle_lot is None:
            raise RuleViolation("batch_not_labelled", f"Batch {batch.batch_code} is not labelled.", field="batch")
        _check_lot_usable(batch.nanoparticle_lot, _local_date(administered_at, site), field="batch")
        _check_administered_after_labelling(batch, administered_at)
        _check_cells_available(batch, administered_cells)
        injection = Injection(
            subject=subject,
            batch=batch,
            administered_cells=administered_cells,
            volume_ml=volume_ml,
            route=route,
            anatomical_target=anatomical_target,
            administered_at=administered_at,
            administered_by=administered_by,
            verified_by=verified_by,
            planned_duration_s=planned_duration_s,
        )
        injection.full_clean()
        injection.save()
        _audit(
            actor=actor,
            action=AuditAction.INJECTION_RECORDED,
            obj=injection,
            trial_id=subject.trial_id,
            site_id=site.pk,
            subject_id=subject.pk,
            changes=diff(None, _snapshot(injection)),
        )
        _signed_visit_changed(subject, actor=actor, reason=f"injection #{injection.pk} recorded after sign-off")
    return injection


_INJECTION_CORRECTABLE = (
    "administered_cells",
    "volume_ml",
    "route",
    "anatomical_target",
    "administered_at",
    "administered_by",
    "verified_by",
    "planned_duration_s",
)


_INJECTION_LOCKED = {
    **_IDS,
    "subject": "an injection given to the wrong subject is a deviation to report, not a typo.",
    "batch": "the batch carries the chain of identity; a wrong batch is a deviation to report, not a typo.",
}


def injection_correct(*, actor, injection: Injection, reason: str, verifier_password: str = "", **fields) -> Injection:
    """Correct an injection. Naming another verifier needs that person's password
    (``verifier_password``), as recording does: nobody is made a verifier unasked."""
    subject = injection.subject
    site = subject.site
    access.require_role(actor, site=site, roles=access.INJECTION_ROLES, action="correct injections")
    reason = _require_reason(reason)
    _require_correctable("injection", fields, correctable=_INJECTION_CORRECTABLE, locked=_INJECTION_LOCKED)
    new_verifier = fields.get("verified_by")
    if new_verifier is not None and new_verifier.pk != injection.verified_by_id:
        # Before the transaction: a refusal is audited and counted, and must stay written.
        _require_four_eyes(
            site, administered_by=fields.get("administered_by", injection.administered_by), verified_by=new_verifier
        )
        _require_verifier_password(
            actor=actor, subject=subject, batch=injection.batch, verifier=new_verifier, password=verifier_password
        )
    with transaction.atomic():
        injection = (
            Injection.objects.select_for_update(of=("self",))
            .select_related("subject", "subject__site", "administered_by", "verified_by")
            .get(pk=injection.pk)
        )
        # Lock the batch as injection_record does, so "cells left" is exact against a
        # concurrent injection or correction from the same batch.
        batch = (
            CellBatch.objects.select_for_update(of=("self",))
            .select_related("nanoparticle_lot")
            .get(pk=injection.batch_id)
        )
        stored_cells = injection.administered_cells
        before = _snapshot(injection, fields)
        _apply(injection, fields)
        changes = _require_change("injection", before, _snapshot(injection, fields))
        # Every rule of injection_record that depends on the injection's own values,
        # asked of the values as they will be stored.
        administered_at = injection.administered_at
        _not_in_future(administered_at, "administered_at", "The administration time")
        _require_four_eyes(site, administered_by=injection.administered_by, verified_by=injection.verified_by)
        _positive(injection.administered_cells, field="administered_cells", what="The number of cells")
        _positive(injection.volume_ml, field="volume_ml", what="The volume")
        _not_negative(injection.planned_duration_s, field="planned_duration_s", what=PLANNED_DURATION)
        _check_administered_after_labelling(batch, administered_at)
        if batch.nanoparticle_lot is not None:
            _check_lot_unexpired(batch.nanoparticle_lot, _local_date(administered_at, site), field="administered_at")
        assert_scope_active(subject, ConsentScope.IMAGING, at=administered_at)
        # The stored row still holds the old count, so what is left for this injection is
        # the batch's remainder plus what this injection took before the correction.
        _check_cells_available(batch, injection.administered_cells, correcting=stored_cells)
        injection.full_clean()
        injection.save(update_fields=list(fields))
        _audit(
            actor=actor,
            action=AuditAction.INJECTION_UPDATED,
            obj=injection,
            trial_id=subject.trial_id,
            site_id=site.pk,
            subject_id=subject.pk,
            changes=changes,
            reason=reason,
        )
        _signed_visit_changed(subject, actor=actor, reason=f"injection #{injection.pk} corrected: {reason}")
    return injection
