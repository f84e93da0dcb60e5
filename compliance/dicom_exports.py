"""A scan's DICOM study taken out of the platform as an export: the export machinery's
side of :mod:`imaging.dicom_export` (which builds the study and knows no export).

Queued exports (``POST /api/v1/scans/{id}/dicom-exports/``, ``compliance.api``) are
built by ``compliance.reports.build_dicom_study``; this module holds the one export that
is not queued, the study written into a folder by ``manage.py export_dicom``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.actions import AuditAction
from audit.chain import record_event
from compliance.models import Export
from imaging import dicom_export
from imaging.models import Scan


def study_write(*, actor, scan: Scan, directory, deidentified: bool) -> list:
    """Write the study's files into ``directory`` (the ``export_dicom`` command) and audit
    it as an export (EXPORT_REQUESTED, then EXPORT_COMPLETED with the SOP instances).

    ``actor`` None is the system (an operator at the server); a user is checked as for
    the API. The files leave the platform's storage, so no Export row holds them."""
    from imaging.dicom import write_study

    scan = dicom_export.scan_with_relations(scan)
    if actor is not None:
        dicom_export.check_may_export(actor, scan, deidentified=deidentified)
    dicom_export.require_exportable(scan)
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
    build = dicom_export.deidentified_study_for_scan if deidentified else dicom_export.study_for_scan
    datasets = build(scan)
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
