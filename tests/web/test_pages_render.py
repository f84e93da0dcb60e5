"""Every page renders for the role it is for, with the numbers it promises."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests import factories as f


def test_it_shows_the_dashboard_with_enrolment_scans_and_alerts(browser_client, coordinator_a, quantified):
    f.NanoparticleLotFactory(
        trial=quantified.subject.trial, lot_number="EXP-SOON", expiry_date=quantified.created_at.date()
    )
    page = browser_client(coordinator_a).get("/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Enrolment per site" in html and "EXP-SOON" in html
    assert 'data-status="quantified"' in html


def test_it_renders_the_subject_timeline_with_plots(browser_client, coordinator_a, quantified):
    page = browser_client(coordinator_a).get(f"/subjects/{quantified.subject_id}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "Retention at the target over time" in html  # the SVG's <title>
    assert "Off-target iron by region" in html
    assert quantified.injection.batch.chain_of_identity_id in html


def test_it_renders_the_viewer_and_its_images(browser_client, investigator_a, quantified):
    client = browser_client(investigator_a)
    page = client.get(f"/scans/{quantified.pk}/")
    assert page.status_code == 200
    assert b"mmol Fe/L" in page.content
    for url in (
        f"/scans/{quantified.pk}/image/axial/0.png",
        f"/scans/{quantified.pk}/image/mip.png",
        f"/scans/{quantified.pk}/image/coronal/5.png",
    ):
        image = client.get(url)
        assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n", url


def test_it_downloads_the_dicom_study_and_audits_it(browser_client, monitor, quantified):
    response = browser_client(monitor).get(f"/scans/{quantified.pk}/dicom.zip")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        modalities = {pydicom.dcmread(io.BytesIO(archive.read(n))).SOPClassUID.name for n in archive.namelist()}
    assert any("Parametric Map" in m for m in modalities) and any("Segmentation" in m for m in modalities)
    event = AuditEvent.objects.filter(action=AuditAction.FILE_DOWNLOADED).order_by("-sequence").first()
    assert event.actor_username == "monitor" and event.changes["file"] == [None, "dicom_study"]


def test_it_refuses_the_dicom_study_to_a_sponsor(browser_client, sponsor, quantified):
    assert browser_client(sponsor).get(f"/scans/{quantified.pk}/dicom.zip").status_code == 404
    assert not AuditEvent.objects.filter(action=AuditAction.FILE_DOWNLOADED).exists()


@pytest.mark.parametrize("path", ["/subjects/", "/subjects/new/", "/products/", "/batches/new/", "/exports/"])
def test_it_renders_the_coordinator_pages(browser_client, coordinator_a, path):
    assert browser_client(coordinator_a).get(path).status_code == 200


@pytest.mark.parametrize("path", ["/products/", "/lots/new/"])
def test_it_renders_the_trial_manager_pages(browser_client, trial_manager, path):
    assert browser_client(trial_manager).get(path).status_code == 200


def test_the_upload_page_sends_chunks_of_the_configured_size(browser_client, imaging_a, pipeline, settings):
    """16 MiB by default: each PATCH costs an fsync and a commit, so 64 KiB chunks made a
    500 MB scan 7,600 requests."""
    page = browser_client(imaging_a).get(f"/subjects/{pipeline.subject.pk}/upload/")
    assert page.status_code == 200
    assert f'data-chunk-size="{16 * 1024 * 1024}"' in page.content.decode()
    settings.IMAGING_UPLOAD_BROWSER_CHUNK_BYTES = 8 * 1024 * 1024
    page = browser_client(imaging_a).get(f"/subjects/{pipeline.subject.pk}/upload/")
    assert f'data-chunk-size="{8 * 1024 * 1024}"' in page.content.decode()
