"""Regions of interest: definition (geometry or label volume) and the scan's regions."""

from __future__ import annotations

import uuid

from django.db import IntegrityError, transaction

from audit.actions import AuditAction
from audit.chain import record_event
from config.errors import RuleViolation
from imaging import processing, uploads
from imaging.models import (
    RegionOfInterest,
    RoiKind,
    Scan,
)
from recon.quantify import GEOMETRY_SIZE_KEYS
from trials.models import Role, Subject
from trials.permissions import access

ROI_ROLES = frozenset({Role.COORDINATOR, Role.IMAGING_STAFF, Role.INVESTIGATOR})


def rois_for(scan: Scan) -> list[RegionOfInterest]:
    own = list(RegionOfInterest.objects.filter(scan=scan))
    return own or list(RegionOfInterest.objects.filter(subject_id=scan.subject_id, scan__isnull=True))


def _clean_geometry(geometry: dict) -> dict:
    shape = geometry.get("shape")
    if shape not in GEOMETRY_SIZE_KEYS:
        raise RuleViolation(
            "invalid_geometry",
            f"shape must be sphere, ellipsoid or box, got {shape!r}.",
            field="geometry",
        )
    key = GEOMETRY_SIZE_KEYS[shape]
    try:
        center = [float(v) for v in geometry["center_m"]]
        size = geometry[key]
        size = [float(size)] * 3 if isinstance(size, (int, float)) else [float(v) for v in size]
    except (KeyError, TypeError, ValueError):
        raise RuleViolation(
            "invalid_geometry",
            f"A {shape} needs center_m (3 numbers, m) and {key} "
            f"({'a number or ' if shape == 'sphere' else ''}3 numbers, m).",
            field="geometry",
        ) from None
    if len(center) != 3 or len(size) != 3 or min(size) <= 0 or max(abs(v) for v in center + size) > 1.0:
        raise RuleViolation(
            "invalid_geometry",
            f"center_m and {key} need 3 values in metres, sizes > 0 and all within 1 m of the scanner centre.",
            field="geometry",
        )
    return {"shape": shape, "center_m": center, key: size}


def roi_define(
    *,
    actor,
    subject: Subject,
    name: str,
    kind: str,
    geometry: dict | None = None,
    scan: Scan | None = None,
    label_volume=None,
    label_value: int | None = None,
) -> RegionOfInterest:
    """Define a region on a subject (all their scans) or on one scan (``scan`` given).

    ``label_volume``: an uploaded file (.npy int array or reconstruction-shaped MDF)."""
    if actor is not None:
        access.require_role(actor, site=subject.site, roles=ROI_ROLES, action="define regions of interest")
    if kind not in RoiKind.values:
        raise RuleViolation("invalid_kind", f"kind must be one of {', '.join(RoiKind.values)}.", field="kind")
    if scan is not None and scan.subject_id != subject.pk:
        raise RuleViolation("scan_of_other_subject", "The scan belongs to another subject.", field="scan")
    if (geometry is None) == (label_volume is None):
        raise RuleViolation("geometry_or_labels", "Give either geometry or a label volume with its label value.")
    relative = ""
    if geometry is not None:
        geometry = _clean_geometry(geometry)
    else:
        relative = _store_label_volume(label_volume, label_value)
    try:
        with transaction.atomic():
            roi = RegionOfInterest(
                subject=subject,
                scan=scan,
                name=name,
                kind=kind,
                geometry=geometry,
                label_file=relative,
                label_value=label_value if relative else None,
                created_by=actor,
            )
            roi.full_clean(validate_constraints=False)
            roi.save()
            record_event(
                actor=actor,
                action=AuditAction.ROI_DEFINED,
                object_type="imaging.regionofinterest",
                object_id=roi.pk,
                trial_id=subject.trial_id,
                site_id=subject.site_id,
                subject_id=subject.pk,
                changes={
                    "name": [None, name],
                    "kind": [None, kind],
                    "geometry": [None, geometry],
                    "scan": [None, scan.pk if scan else None],
                    "label_value": [None, roi.label_value],
                },
            )
    except IntegrityError:
        if relative:
            uploads.remove(relative)
        raise RuleViolation(
            "duplicate_roi",
            f"A region named {name!r} already exists for this {'scan' if scan else 'subject'}.",
            field="name",
        ) from None
    except BaseException:
        if relative:
            uploads.remove(relative)
        raise
    return roi


def _store_label_volume(upload_file, label_value) -> str:
    if label_value is None or int(label_value) <= 0:
        raise RuleViolation(
            "label_value_required",
            "A label volume needs label_value (a positive integer).",
            field="label_value",
        )
    suffix = ".npy" if upload_file.name.lower().endswith(".npy") else ".mdf"
    relative = f"imaging/label_volumes/{uuid.uuid4().hex}{suffix}"
    path = uploads.media_path(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for chunk in upload_file.chunks():
            fh.write(chunk)
    try:
        labels = processing.load_labels(str(path))
        if labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        if not (labels == int(label_value)).any():
            raise ValueError(f"label {label_value} marks no voxel of the volume")
    except Exception as exc:  # noqa: BLE001 - h5py and numpy raise many types: any unreadable file is refused alike
        uploads.remove(relative)
        raise RuleViolation(
            "invalid_label_volume", f"The label volume cannot be used: {exc}", field="label_volume"
        ) from None
    return relative
