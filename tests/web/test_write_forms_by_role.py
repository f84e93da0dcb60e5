"""A write form is there only for those whose role may save it: everyone else who can
read the record (monitor, sponsor, auditor, imaging staff, an investigator, as the case
may be) gets 404 on GET and on POST, and nothing is written; the page links to the form
only for those who may use it. The rule is the services' (trials.permissions.access)."""

from __future__ import annotations

import datetime as dt

import pytest

from compliance.models import Export
from imaging import pacs
from imaging.models import DicomSend, RegionOfInterest, Scan
from tests import factories as f
from tests.web.scans import scans_at
from trials.services.consent import consent_withdraw

CORRECTION_POST = {
    "reason": "typo on the CRF, source checked",
    "status": "withdrawn",
    "enrolment_date": "2020-01-01",
    "scopes": ["imaging"],
    "qc_status": "rejected",
    "release_status": "rejected",
}
SPHERE = {
    "roi-name": "heart",
    "roi-kind": "target",
    "roi-shape": "sphere",
    "roi-centre_x_mm": "0",
    "roi-centre_y_mm": "0",
    "roi-centre_z_mm": "0",
    "roi-size_x_mm": "8",
}


@pytest.fixture
def records(ready, coordinator_a, investigator_a):
    subject, consent, batch = ready
    injection = f.InjectionFactory(
        subject=subject, batch=batch, administered_by=coordinator_a, verified_by=investigator_a
    )
    return subject, consent, batch, injection


def _coordinator_forms(subject, consent, batch, injection) -> list[str]:
    """The forms only a coordinator of the record's site (or, for the trial's lots, the trial manager) may save."""
    return [
        f"/subjects/{subject.pk}/edit/",
        f"/subjects/{subject.pk}/status/",
        f"/consents/{consent.pk}/edit/",
        f"/injections/{injection.pk}/edit/",
        f"/lots/{batch.nanoparticle_lot_id}/edit/",
        f"/batches/{batch.pk}/edit/",
        f"/subjects/{subject.pk}/consent/",
        f"/subjects/{subject.pk}/injection/",
        f"/consents/{consent.pk}/withdraw/",
        f"/lots/{batch.nanoparticle_lot_id}/qc/",
        f"/batches/{batch.pk}/release/",
        f"/batches/{batch.pk}/label/",
    ]


@pytest.mark.parametrize("who", ["monitor", "sponsor", "auditor", "imaging_a", "investigator_a"])
def test_coordinator_forms_answer_404_to_other_roles(request, browser_client, who, records, nothing_written):
    client = browser_client(request.getfixturevalue(who))
    urls = _coordinator_forms(*records)
    with nothing_written():
        for url in urls:
            assert client.get(url).status_code == 404, (who, url)
            assert client.post(url, CORRECTION_POST).status_code == 404, (who, url)


@pytest.mark.parametrize("who", ["monitor", "sponsor", "auditor", "imaging_a", "investigator_a"])
def test_pages_link_to_no_form_the_role_cannot_save(request, browser_client, who, records):
    subject, consent, batch, injection = records
    client = browser_client(request.getfixturevalue(who))
    html = ""
    for page in (f"/subjects/{subject.pk}/", "/products/"):
        response = client.get(page)
        if response.status_code == 200:  # a sponsor may not see the subject page at all
            html += response.content.decode()
    for url in _coordinator_forms(*records):
        assert f'href="{url}"' not in html, (who, url)


def test_the_coordinator_is_still_offered_and_served_every_form(browser_client, coordinator_a, records):
    subject, consent, batch, injection = records
    client = browser_client(coordinator_a)
    html = client.get(f"/subjects/{subject.pk}/").content.decode() + client.get("/products/").content.decode()
    for url in _coordinator_forms(*records):
        if url.startswith("/lots/"):  # the trial's lots: the trial manager's forms (test below)
            assert f'href="{url}"' not in html and client.get(url).status_code == 404, url
            continue
        if "/label/" in url:  # the batch is labelled already: no link, the form still opens
            assert f'href="{url}"' not in html
        else:
            assert f'href="{url}"' in html, url
        assert client.get(url).status_code == 200, url
    response = client.post(
        f"/subjects/{subject.pk}/edit/",
        {
            "enrolment_date": (subject.enrolment_date - dt.timedelta(days=1)).isoformat(),
            "reason": "typo on the CRF, source checked",
        },
    )
    assert response.status_code == 302
    response = client.post(
        f"/subjects/{subject.pk}/status/", {"status": "withdrawn", "reason": "moved abroad", "confirm": "on"}
    )
    assert response.status_code == 302
    subject.refresh_from_db()
    assert subject.status == "withdrawn"


def test_the_trial_manager_is_offered_and_served_the_lot_forms(browser_client, trial_manager, records):
    client = browser_client(trial_manager)
    html = client.get("/products/").content.decode()
    for url in [u for u in _coordinator_forms(*records) if u.startswith("/lots/")]:
        assert f'href="{url}"' in html, url
        assert client.get(url).status_code == 200, url


@pytest.mark.parametrize("who", ["monitor", "sponsor", "auditor"])
def test_regions_answer_404_to_roles_that_cannot_define_them(request, browser_client, who, ready):
    subject = ready[0]
    client = browser_client(request.getfixturevalue(who))
    page = client.get(f"/subjects/{subject.pk}/")
    assert page.status_code in (200, 404) and b"Add a region" not in page.content
    assert client.post(f"/subjects/{subject.pk}/rois/", SPHERE).status_code == 404
    assert not RegionOfInterest.objects.exists()


@pytest.mark.parametrize("who", ["coordinator_a", "imaging_a", "investigator_a"])
def test_regions_are_defined_by_the_roles_that_may(request, browser_client, who, ready):
    subject = ready[0]
    client = browser_client(request.getfixturevalue(who))
    assert b"Add a region" in client.get(f"/subjects/{subject.pk}/").content
    assert client.post(f"/subjects/{subject.pk}/rois/", SPHERE).status_code == 302
    assert RegionOfInterest.objects.get().name == "heart"


@pytest.fixture
def destination(quantified):
    return pacs.pacs_destination_register(
        actor=None,
        trial=quantified.subject.trial,
        name="Site PACS",
        protocol="dicomweb",
        base_url="https://pacs.example.org/dicomweb",
    )


@pytest.mark.parametrize("who", ["sponsor", "auditor"])
def test_pacs_send_answers_404_to_roles_that_may_not_take_the_identified_study_out(
    request, browser_client, who, quantified, destination
):
    client = browser_client(request.getfixturevalue(who))
    assert "Site PACS" not in client.get(f"/scans/{quantified.pk}/").content.decode()
    # A POST-only action (405), except for a sponsor, to whom no scan page exists (404).
    assert client.get(f"/scans/{quantified.pk}/pacs/").status_code == (404 if who == "sponsor" else 405)
    assert client.post(f"/scans/{quantified.pk}/pacs/", {"destination": destination.pk}).status_code == 404
    assert not DicomSend.objects.exists()


def test_export_answers_404_to_a_sponsor_once_data_sharing_is_withdrawn(
    browser_client, api, sponsor, coordinator_a, quantified
):
    # The scan viewer shows the subject's code and real dates: no page for a sponsor (404).
    # With data-sharing consent the sponsor may have the de-identified study through the API
    # (the identified one stays a refusal); once it is withdrawn, the scan is not theirs: 404.
    client = browser_client(sponsor)
    assert client.get(f"/scans/{quantified.pk}/").status_code == 404
    assert client.post(f"/scans/{quantified.pk}/export/", {"kind": "dicom_study_deidentified"}).status_code == 404
    exports = f"/api/v1/scans/{quantified.pk}/dicom-exports/"
    assert api(sponsor).post(exports, {"kind": "dicom_study"}, format="json").status_code == 403
    assert api(sponsor).post(exports, {"kind": "dicom_study_deidentified"}, format="json").status_code == 201
    assert Export.objects.count() == 1
    consent = quantified.subject.consents.get()
    consent_withdraw(actor=coordinator_a, consent=consent, scopes=["data_sharing"], reason="no more sharing")
    for kind in ("dicom_study", "dicom_study_deidentified"):
        assert api(sponsor).post(exports, {"kind": kind}, format="json").status_code == 404
    assert Export.objects.count() == 1


@pytest.mark.parametrize("who", ["monitor", "investigator_a", "imaging_a"])
def test_export_and_pacs_still_work_for_the_roles_that_may(request, browser_client, who, quantified, destination):
    client = browser_client(request.getfixturevalue(who))
    assert client.post(f"/scans/{quantified.pk}/export/", {"kind": "dicom_study"}).status_code == 302
    assert client.post(f"/scans/{quantified.pk}/pacs/", {"destination": destination.pk}).status_code == 302
    assert Export.objects.count() == 1 and DicomSend.objects.count() == 1


@pytest.mark.parametrize("who", ["monitor", "sponsor", "auditor", "investigator_a"])
def test_retry_answers_404_to_roles_that_may_not_retry(request, browser_client, who, site_a):
    failed = scans_at(site_a, 1, status="failed", retryable=True, status_reason="worker lost")[0]
    client = browser_client(request.getfixturevalue(who))
    page = client.get(f"/scans/{failed.pk}/")
    assert b">Retry</button>" not in page.content
    assert client.post(f"/scans/{failed.pk}/retry/").status_code == 404
    failed.refresh_from_db()
    assert failed.status == Scan.Status.FAILED and failed.retryable


def test_retry_still_works_for_the_coordinator(browser_client, coordinator_a, site_a):
    failed = scans_at(site_a, 1, status="failed", retryable=True, status_reason="worker lost")[0]
    client = browser_client(coordinator_a)
    assert b">Retry</button>" in client.get(f"/scans/{failed.pk}/").content
    assert client.post(f"/scans/{failed.pk}/retry/").status_code == 302
    failed.refresh_from_db()
    assert failed.status == Scan.Status.RECEIVED
