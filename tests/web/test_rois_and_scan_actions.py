"""Regions of interest from the subject page, and the scan viewer's DICOM export, PACS
send and retry: each through its service, per role, 404 for another site, and a refusal
shown next to its field with nothing written."""

from __future__ import annotations

import pytest

from compliance.models import Export
from imaging import pacs
from imaging.models import DicomSend, RegionOfInterest, Scan
from tests.web.scans import scans_at

SPHERE = {
    "roi-name": "heart",
    "roi-kind": "target",
    "roi-shape": "sphere",
    "roi-centre_x_mm": "0",
    "roi-centre_y_mm": "-5",
    "roi-centre_z_mm": "12.5",
    "roi-size_x_mm": "8",
}


def test_it_defines_a_region_from_geometry_in_millimetres(browser_client, coordinator_a, ready):
    subject = ready[0]
    client = browser_client(coordinator_a)
    assert b"Add a region" in client.get(f"/subjects/{subject.pk}/").content
    response = client.post(f"/subjects/{subject.pk}/rois/", SPHERE)
    assert response.status_code == 302
    roi = RegionOfInterest.objects.get()
    assert (roi.name, roi.kind, roi.scan) == ("heart", "target", None)
    assert roi.geometry == {"shape": "sphere", "center_m": [0.0, -0.005, 0.0125], "radius_m": [0.008] * 3}
    assert "sphere, centre (0, -5, 12.5) mm, radius 8 mm" in client.get(f"/subjects/{subject.pk}/").content.decode()


def test_it_needs_three_sizes_for_an_ellipsoid(browser_client, coordinator_a, ready):
    subject = ready[0]
    response = browser_client(coordinator_a).post(
        f"/subjects/{subject.pk}/rois/", {**SPHERE, "roi-shape": "ellipsoid", "roi-size_z_mm": "3"}
    )
    assert response.status_code == 400
    assert response.context["roi_form"].errors["size_y_mm"]
    assert b'id="id_roi-size_y_mm_error"' in response.content
    assert not RegionOfInterest.objects.exists()


def test_it_shows_a_duplicate_name_next_to_the_name(browser_client, coordinator_a, ready):
    subject = ready[0]
    client = browser_client(coordinator_a)
    client.post(f"/subjects/{subject.pk}/rois/", SPHERE)
    response = client.post(
        f"/subjects/{subject.pk}/rois/", {**SPHERE, "roi-shape": "box", "roi-size_y_mm": "4", "roi-size_z_mm": "4"}
    )
    assert response.status_code == 400
    assert "already exists" in response.context["roi_form"].errors["name"][0]
    assert b'id="id_roi-name_error"' in response.content
    assert RegionOfInterest.objects.count() == 1


def test_it_refuses_regions_to_roles_without_the_right_and_to_other_sites(
    browser_client, monitor, coordinator_b, ready
):
    subject = ready[0]
    client = browser_client(monitor)
    assert b"Add a region" not in client.get(f"/subjects/{subject.pk}/").content
    assert client.post(f"/subjects/{subject.pk}/rois/", SPHERE).status_code == 404
    assert browser_client(coordinator_b).post(f"/subjects/{subject.pk}/rois/", SPHERE).status_code == 404
    assert not RegionOfInterest.objects.exists()


@pytest.fixture
def destination(quantified):
    return pacs.pacs_destination_register(
        actor=None,
        trial=quantified.subject.trial,
        name="Site PACS",
        protocol="dicomweb",
        base_url="https://pacs.example.org/dicomweb",
    )


def test_the_viewer_offers_the_exports_each_role_may_request(
    browser_client, investigator_a, auditor, quantified, destination
):
    html = browser_client(investigator_a).get(f"/scans/{quantified.pk}/").content.decode()
    assert 'value="dicom_study"' in html and 'value="dicom_study_deidentified"' in html
    assert "Site PACS" in html
    html = browser_client(auditor).get(f"/scans/{quantified.pk}/").content.decode()
    assert 'value="dicom_study_deidentified"' in html
    assert 'value="dicom_study"' not in html and "Site PACS" not in html


def test_it_requests_a_dicom_export_that_shows_on_the_exports_page(browser_client, investigator_a, quantified):
    client = browser_client(investigator_a)
    response = client.post(f"/scans/{quantified.pk}/export/", {"kind": "dicom_study_deidentified"})
    assert response.status_code == 302 and response["Location"] == "/exports/"
    export = Export.objects.get()
    assert (export.kind, export.scan, export.requested_by) == ("dicom_study_deidentified", quantified, investigator_a)
    html = client.get("/exports/").content.decode()
    assert "De-identified DICOM study of a scan" in html and 'data-status="queued"' in html


def test_it_refuses_the_identified_study_to_an_auditor_next_to_the_buttons(browser_client, auditor, quantified):
    response = browser_client(auditor).post(f"/scans/{quantified.pk}/export/", {"kind": "dicom_study"})
    assert response.status_code == 400
    assert "may not export the identified" in response.context["export_form"].errors["kind"][0]
    assert b'id="id_kind_error"' in response.content
    assert not Export.objects.exists()


def test_it_sends_to_an_active_pacs_destination(browser_client, investigator_a, quantified, destination):
    client = browser_client(investigator_a)
    response = client.post(f"/scans/{quantified.pk}/pacs/", {"destination": destination.pk})
    assert response.status_code == 302
    send = DicomSend.objects.get()
    assert (send.scan, send.destination, send.deidentified) == (quantified, destination, True)
    assert "PACS sends" in client.get("/exports/").content.decode()


def test_it_refuses_an_inactive_destination_next_to_the_field(browser_client, investigator_a, quantified, destination):
    destination.active = False
    destination.save()
    response = browser_client(investigator_a).post(f"/scans/{quantified.pk}/pacs/", {"destination": destination.pk})
    assert response.status_code == 400 and response.context["pacs_form"].errors["destination"]
    assert not DicomSend.objects.exists()


def test_scan_actions_answer_404_to_another_site(browser_client, coordinator_b, quantified, destination):
    client = browser_client(coordinator_b)
    for url, data in (
        (f"/scans/{quantified.pk}/export/", {"kind": "dicom_study"}),
        (f"/scans/{quantified.pk}/pacs/", {"destination": destination.pk}),
        (f"/scans/{quantified.pk}/retry/", {}),
    ):
        assert client.post(url, data).status_code == 404, url
    assert not Export.objects.exists() and not DicomSend.objects.exists()


def test_it_retries_a_failed_retryable_scan(browser_client, imaging_a, site_a):
    failed = scans_at(site_a, 1, status="failed", retryable=True, status_reason="worker lost")[0]
    client = browser_client(imaging_a)
    assert b">Retry</button>" in client.get(f"/scans/{failed.pk}/").content
    response = client.post(f"/scans/{failed.pk}/retry/")
    assert response.status_code == 302
    failed.refresh_from_db()
    assert failed.status == Scan.Status.RECEIVED and not failed.retryable


def test_it_does_not_retry_a_scan_that_is_not_retryable(browser_client, imaging_a, site_a):
    failed = scans_at(site_a, 1, status="failed", retryable=False)[0]
    client = browser_client(imaging_a)
    assert b">Retry</button>" not in client.get(f"/scans/{failed.pk}/").content
    response = client.post(f"/scans/{failed.pk}/retry/", follow=True)
    assert "not retryable" in response.content.decode()
    failed.refresh_from_db()
    assert failed.status == Scan.Status.FAILED
