"""Rows for the generic API tests in tests/trials (cross-site matrix, query counts,
sponsor sees no identity): see tests/trials/api_routes.py."""

from __future__ import annotations

from tests.imaging import factories as fi
from tests.trials.api_routes import _injection_a, _subject_a


def _scan_a(cast):
    return fi.ScanFactory(injection=_injection_a(cast))


def _measurement_a(cast):
    return fi.MeasurementFactory(reconstruction=fi.ReconstructionFactory(scan=_scan_a(cast)))


def _dicom_send_a(cast):
    from imaging.models import DicomSend, PacsDestination

    scan = _scan_a(cast)
    destination = PacsDestination.objects.create(
        trial=scan.subject.trial, name=f"PACS {scan.pk}", protocol="dicomweb", base_url="http://127.0.0.1:9/dicom-web"
    )
    return DicomSend.objects.create(scan=scan, destination=destination, deidentified=True)


# Every imaging record hangs off a subject, scanner or scan at site A.
HIDDEN_FROM_SITE_B = {
    "scan": _scan_a,
    "scanner": lambda cast: fi.ScannerFactory(site=cast.site_a),
    "system-matrix": lambda cast: fi.SystemMatrixFactory(scanner=fi.ScannerFactory(site=cast.site_a)),
    "measurement": _measurement_a,
    "roi": lambda cast: fi.RoiFactory(subject=_subject_a(cast)),
    "alert": lambda cast: fi.AlertFactory(scan=_scan_a(cast)),
    "upload": lambda cast: fi.UploadFactory(injection=_injection_a(cast)),
    "subject-time-course": _subject_a,
    "dicom-send": lambda cast: _dicom_send_a(cast),
}

VISIBLE_TO_MONITOR = dict(HIDDEN_FROM_SITE_B)

# Raw MDF files can carry identifying header fields (operator, study names), so a
# sponsor gets 403 on the original upload; the derived reconstruction is theirs to read.
# The factory scan has no reconstruction file yet: 404 "no reconstruction".
SPONSOR_DETAIL_STATUS = {"scan-original": 403, "scan-reconstruction-file": 404}

# No de-identified projection (compliance.sponsor): regions and alerts carry staff text
# and timestamps, scanners and system matrices site equipment names, PACS sends staff
# and destinations. A sponsor's list is empty and each detail a 404.
HIDDEN_FROM_SPONSOR = {"roi", "alert", "scanner", "system-matrix", "dicom-send"}
