"""POST /scans/{id}/dicom-exports/ goes through the Export machinery: queued, built by
compliance.services.export_run (the task's body), downloaded once and audited; another
site gets 404; a sponsor gets the de-identified kind only."""

from __future__ import annotations

import io
import zipfile

import pydicom

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Export
from compliance.services.exports import export_download, export_run
from tests.imaging.dicom_cases import quantified  # noqa: F401


def _url(scan):
    return f"/api/v1/scans/{scan.pk}/dicom-exports/"


def test_it_builds_and_audits_the_download(api, quantified, coordinator_a):  # noqa: F811
    client = api(coordinator_a)
    response = client.post(_url(quantified), {"kind": "dicom_study"}, format="json")
    assert response.status_code == 201, response.json()
    export = Export.objects.get(pk=response.json()["id"])
    assert (export.status, export.scan_id, export.subject_id) == ("queued", quantified.pk, quantified.subject_id)
    export = export_run(export.pk)
    assert export.status == "ready" and export.progress_percent == 100, export.error
    assert export_run(export.pk) is None  # delivered twice, built once
    status = client.get(f"/api/v1/exports/{export.pk}/").json()
    assert status["status"] == "ready" and status["scan"] == quantified.pk
    assert [e["id"] for e in client.get(_url(quantified)).json()] == [export.pk]
    download = client.get(f"/api/v1/exports/{export.pk}/download/")
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))) as archive:
        objects = [pydicom.dcmread(io.BytesIO(archive.read(n))) for n in archive.namelist()]
    assert len(objects) == 4 and {o.PatientID for o in objects} == {quantified.subject.code}
    actions = list(
        AuditEvent.objects.filter(object_type="compliance.export", object_id=str(export.pk)).values_list(
            "action", flat=True
        )
    )
    assert actions == [AuditAction.EXPORT_REQUESTED, AuditAction.EXPORT_COMPLETED, AuditAction.EXPORT_DOWNLOADED]


def test_it_validates_ownership(api, quantified, coordinator_b):  # noqa: F811
    events = AuditEvent.objects.count()
    response = api(coordinator_b).post(_url(quantified), {"kind": "dicom_study_deidentified"}, format="json")
    assert response.status_code == 404
    assert api(coordinator_b).get(_url(quantified)).status_code == 404
    assert Export.objects.count() == 0 and AuditEvent.objects.count() == events


def test_it_gives_a_sponsor_the_deidentified_kind_only(api, quantified, sponsor):  # noqa: F811
    client = api(sponsor)
    refused = client.post(_url(quantified), {"kind": "dicom_study"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert Export.objects.count() == 0
    accepted = client.post(_url(quantified), {"kind": "dicom_study_deidentified"}, format="json")
    assert accepted.status_code == 201
    export = export_run(accepted.json()["id"])
    assert export.status == "ready", export.error
    with export_download(actor=sponsor, export=export) as handle, zipfile.ZipFile(handle) as archive:
        objects = [pydicom.dcmread(io.BytesIO(archive.read(n))) for n in archive.namelist()]
    assert {o.PatientIdentityRemoved for o in objects} == {"YES"}
    assert quantified.subject.code not in {o.PatientID for o in objects}


def test_it_refuses_a_scan_that_is_not_quantified(api, pipeline, coordinator_a):
    from tests.imaging.helpers import uploaded_scan

    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    response = api(coordinator_a).post(_url(scan), {"kind": "dicom_study"}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "scan_not_quantified"
    assert Export.objects.count() == 0
