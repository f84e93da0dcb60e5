"""A scan's DICOM study, from its rows and files: the service side of :mod:`imaging.dicom`.

``imaging.dicom`` builds DICOM from plain dataclasses and arrays and knows no model;
this module translates one quantified scan (its newest reconstruction, its ROIs as
masks on the reconstruction grid via :mod:`recon.quantify`, its measurements, the
subject, the site) into those inputs, and applies the trial's de-identification.
Every consumer goes through here: the Export task (``compliance.reports``), PACS
delivery (``imaging.pacs``), the ``export_dicom`` command and the browser's zip.

What goes into an (identified) study: Patient ID = the subject's trial code (already
pseudonymous: no name, birth date or record number ever leaves the platform in DICOM),
Study Date/Time = the scan's acquisition (injection time + hours after injection) in
the site's time zone, Institution Name = the site's name, Accession Number and Study
ID from the scan id. A de-identified study is that study through
:func:`imaging.dicom.deidentify` with the trial's ``deidentification_secret``, the
subject's ``compliance.deidentify.date_shift_days`` (the same shift as the sponsor data
set, so DICOM dates and CSV dates of one subject agree) and Patient ID = the subject's
sponsor pseudonym (``compliance.deidentify.subject_pseudonym``).

Frame of Reference
------------------
The study's Frame of Reference UID is derived from the scan (see
``imaging.dicom.build``): it names the MPI scanner's coordinate system for that
acquisition, used as patient LPS coordinates unchanged, and nothing here assumes it is
the only frame of the subject. An MRI or CT series of the same subject (acquired on
another device, in its own frame) would be registered later by a Spatial Registration
object (PS3.3 A.39) whose Registration Sequence maps that frame onto this one; the
registration would reference this study's Frame of Reference UID, which stays stable
across re-exports of the same scan, and a de-identified registration stays consistent
because UIDs are remapped with the same per-trial key. Nothing in the objects built
here (orientation, positions, pixel spacing) is specific to MPI beyond Modality OT.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from pydicom import Dataset

from config.errors import RuleViolation
from imaging import processing, uploads
from imaging.models import Scan
from recon.quantify import Grid, mask_from_record

Progress = Callable[[str, float], None]

EXPORTABLE_STATUSES = frozenset({Scan.Status.QUANTIFIED})
LoadedVolume = processing.LoadedVolume


def no_progress(stage: str, fraction: float) -> None:
    return None


def require_exportable(scan: Scan) -> None:
    """Refuse a scan without a quantified reconstruction (nothing to put into DICOM)."""
    if scan.status not in EXPORTABLE_STATUSES:
        raise RuleViolation(
            "scan_not_quantified",
            f"Scan #{scan.pk} is {scan.status}: only a reconstructed and quantified scan can be exported as DICOM.",
        )
    if not scan.reconstructions.exists():
        raise RuleViolation("scan_not_quantified", f"Scan #{scan.pk} has no reconstruction.")


def load_volume(reconstruction) -> LoadedVolume:
    return processing.load_volume(uploads.media_path(reconstruction.file))


def roi_mask(roi, grid: Grid) -> np.ndarray | None:
    """The ROI's mask (nz, ny, nx) bool on ``grid``; None for a label volume of another grid.

    Geometric ROIs without the quantification's integration margin: the mask is what
    was drawn, the SR carries what was measured in it."""
    nx, ny, nz = grid.size
    if roi.geometry:
        flat = mask_from_record(grid, roi.geometry)
    else:
        labelled = processing.label_mask(str(uploads.media_path(roi.label_file)), roi.label_value, grid)
        if labelled is None:
            return None
        flat = labelled
    return np.asarray(flat, dtype=bool).reshape(nz, ny, nx)


def acquired_at(scan: Scan) -> dt.datetime:
    """When the scan was taken, in the site's time zone."""
    taken = scan.injection.administered_at + dt.timedelta(hours=scan.hours_after_injection)
    return taken.astimezone(zoneinfo.ZoneInfo(scan.subject.site.time_zone))


def study_info(scan: Scan):
    from imaging.dicom import StudyInfo

    return StudyInfo(
        scan_id=f"scan-{scan.pk}",
        patient_id=scan.subject.code,
        study_datetime=acquired_at(scan),
        accession_number=f"S{scan.pk}",
        study_id=str(scan.pk),
        institution_name=scan.subject.site.name,
        study_description=f"MPI cell tracking {scan.hours_after_injection:g} h after injection",
    )


def _inputs(scan: Scan):
    """(volume float32, geometry, [RoiSpec], [RoiMetrics], StudyInfo) of the newest reconstruction."""
    from imaging.dicom import RoiMetrics, RoiSpec, VolumeGeometry
    from imaging.dicom.build import RoiKind
    from imaging.services.rois import rois_for

    reconstruction = scan.reconstructions.order_by("-attempt").first()
    if reconstruction is None:  # require_exportable() refuses such a scan first
        raise ValueError(f"scan #{scan.pk} has no reconstruction")
    volume = load_volume(reconstruction)
    by_roi = {m.roi_id: m for m in reconstruction.measurements.all()}
    specs: list[RoiSpec] = []
    metrics: list[RoiMetrics] = []
    for roi in rois_for(scan):
        mask = roi_mask(roi, volume.grid)
        if mask is None:
            continue
        label = len(specs) + 1
        specs.append(RoiSpec(label=label, name=roi.name, kind=cast(RoiKind, roi.kind), mask=mask))
        m = by_roi.get(roi.pk)
        if m is not None:
            metrics.append(
                RoiMetrics(
                    roi_label=label,
                    iron_mass_ng=m.iron_ng,
                    uncertainty_ng=m.uncertainty_ng,
                    cell_count=m.cell_count,
                    detection_limit_ng=m.detection_limit_ng,
                    retention_percent=m.retention_percent if m.roi_kind == "target" else None,
                    off_target_percent=m.off_target_percent,
                )
            )
    geometry = VolumeGeometry(size=volume.grid.size, field_of_view_m=volume.grid.fov_m, center_m=volume.grid.center_m)
    return volume.values.astype(np.float32), geometry, specs, metrics, study_info(scan)


def _scan_with_relations(scan: Scan) -> Scan:
    return Scan.objects.select_related("subject__site", "subject__trial", "injection").get(pk=scan.pk)


def study_for_scan(scan: Scan, *, progress: Progress = no_progress) -> list[Dataset]:
    """The scan's study: [source Secondary Capture, Parametric Map, SEG, SR].

    Raises RuleViolation ``scan_not_quantified`` (409) for a scan that is not quantified."""
    from imaging.dicom import build_study

    scan = _scan_with_relations(scan)
    require_exportable(scan)
    progress("loading", 0.1)
    inputs = _inputs(scan)
    progress("building", 0.4)
    datasets = build_study(*inputs)
    progress("built", 0.7)
    return datasets


def deidentification_for(scan: Scan) -> dict:
    """The keyword arguments of :func:`imaging.dicom.deidentify` for ``scan``'s subject."""
    from compliance.deidentify import date_shift_days, subject_pseudonym

    trial, subject = scan.subject.trial, scan.subject
    return {
        "trial_secret": trial.deidentification_secret.encode(),
        "date_shift_days": date_shift_days(trial, subject),
        "patient_id": subject_pseudonym(trial, subject),
    }


def deidentified_study_for_scan(scan: Scan, *, progress: Progress = no_progress) -> list[Dataset]:
    """The study de-identified (PS3.15 Annex E) with the trial's key and the subject's date shift."""
    from imaging.dicom import deidentify

    scan = _scan_with_relations(scan)
    datasets = study_for_scan(scan, progress=progress)
    progress("de-identifying", 0.8)
    return deidentify(datasets, **deidentification_for(scan))


def study_zip(scan: Scan, *, deidentified: bool = False, progress: Progress = no_progress) -> bytes:
    from imaging.dicom import zip_study

    build = deidentified_study_for_scan if deidentified else study_for_scan
    datasets = build(scan, progress=progress)
    progress("zipping", 0.9)
    return zip_study(datasets)


# --------------------------------------------------------------------------- who may have which


def _roles():
    from trials.models import Role

    identified = frozenset({Role.COORDINATOR, Role.INVESTIGATOR, Role.IMAGING_STAFF, Role.MONITOR})
    return identified, identified | {Role.AUDITOR, Role.SPONSOR}


def check_may_export(actor, scan: Scan, *, deidentified: bool) -> None:
    """Refuse (403) unless ``actor`` may take this scan's study out of the platform.

    Identified study (subject code, real dates, site name; never identity): the site's
    coordinators, investigators and imaging staff, and the trial's monitors.
    De-identified study: those, and the trial's auditors and sponsors; a sponsor only
    for a subject whose data-sharing consent is in force (as in the sponsor data set).
    """
    from trials.models import Role
    from trials.permissions import access
    from trials.selectors import consent_allows

    identified_roles, deidentified_roles = _roles()
    held = access.roles_at(actor, scan.subject.site)
    allowed = deidentified_roles if deidentified else identified_roles
    if not held & {str(r) for r in allowed}:
        what = "the de-identified" if deidentified else "the identified"
        raise RuleViolation(
            "forbidden",
            f"Your role may not export {what} DICOM study of scan #{scan.pk}"
            + ("" if deidentified else "; a sponsor may request the de-identified one")
            + ".",
            field="kind",
        )
    if held & {str(r) for r in allowed} == {str(Role.SPONSOR)} and not consent_allows(scan.subject, "data_sharing"):
        raise RuleViolation("forbidden", "The subject's data-sharing consent is not in force.")


def study_write(*, actor, scan: Scan, directory, deidentified: bool) -> list:
    """Write the study's files into ``directory`` (the ``export_dicom`` command) and audit
    it as an export (EXPORT_REQUESTED, then EXPORT_COMPLETED with the SOP instances).

    ``actor`` None is the system (an operator at the server); a user is checked as for
    the API. The files leave the platform's storage, so no Export row holds them."""
    from django.db import transaction

    from audit.actions import AuditAction
    from audit.chain import record_event
    from compliance.models import Export
    from imaging.dicom import write_study

    scan = _scan_with_relations(scan)
    if actor is not None:
        check_may_export(actor, scan, deidentified=deidentified)
    require_exportable(scan)
    kind = Export.Kind.DICOM_STUDY_DEIDENTIFIED if deidentified else Export.Kind.DICOM_STUDY
    scope: dict[str, Any] = {
        "trial_id": scan.subject.trial_id,
        "site_id": scan.subject.site_id,
        "subject_id": scan.subject_id,
    }
    with transaction.atomic():
        record_event(
            actor=actor,
            action=AuditAction.EXPORT_REQUESTED,
            object_type="imaging.scan",
            object_id=scan.pk,
            changes={"kind": kind, "scope": f"scan #{scan.pk}", "to": "directory"},
            **scope,
        )
    datasets = (deidentified_study_for_scan if deidentified else study_for_scan)(scan)
    paths = write_study(datasets, directory)
    with transaction.atomic():
        record_event(
            actor=actor,
            action=AuditAction.EXPORT_COMPLETED,
            object_type="imaging.scan",
            object_id=scan.pk,
            changes={
                "kind": kind,
                "status": "ready",
                "to": "directory",
                "objects": [
                    {"sop_class_uid": str(ds.SOPClassUID), "sop_instance_uid": str(ds.SOPInstanceUID)}
                    for ds in datasets
                ],
            },
            **scope,
        )
    return paths
