"""Writes through the API reach the services: one happy path per endpoint."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests import factories as f
from trials.models import CellBatch, Consent, Injection, NanoparticleLot, Subject


def test_it_enrols_a_subject_and_names_its_site(api, site_a, coordinator_a):
    response = api(coordinator_a).post(
        "/api/v1/subjects/", {"site": site_a.pk, "enrolment_date": "2026-01-05"}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["code"], body["site"], body["site_code"], body["status"]) == (
        "MPI-CT-T01-A-0001",
        site_a.pk,
        "A",
        "screening",
    )
    assert Subject.objects.get().code == body["code"]


def test_it_changes_a_subject_status_with_a_reason(api, site_a, coordinator_a):
    subject = f.SubjectFactory(site=site_a, status="screening")
    response = api(coordinator_a).post(
        f"/api/v1/subjects/{subject.pk}/status/", {"status": "enrolled", "reason": "eligible"}, format="json"
    )
    assert response.status_code == 200 and response.json()["status"] == "enrolled"


def test_it_filters_subjects_by_site_status_and_code(api, site_a, site_b, monitor):
    f.SubjectFactory(site=site_a, code="MPI-CT-T01-A-0001", status="enrolled")
    f.SubjectFactory(site=site_a, code="MPI-CT-T01-A-0002", status="screening")
    f.SubjectFactory(site=site_b, code="MPI-CT-T01-B-0001", status="enrolled")
    client = api(monitor)
    assert client.get("/api/v1/subjects/", {"site": site_a.pk}).json()["count"] == 2
    assert client.get("/api/v1/subjects/", {"site_code": "B"}).json()["count"] == 1
    assert client.get("/api/v1/subjects/", {"status": "enrolled"}).json()["count"] == 2
    assert [r["code"] for r in client.get("/api/v1/subjects/", {"code": "A-0002"}).json()["results"]] == [
        "MPI-CT-T01-A-0002"
    ]


def test_it_paginates_lists(api, site_a, monitor):
    for _ in range(3):
        f.SubjectFactory(site=site_a)
    body = api(monitor).get("/api/v1/subjects/", {"page_size": 2}).json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]


def test_it_adds_a_consent_document_by_upload(api, trial, trial_manager):
    upload = SimpleUploadedFile("consent-v2.pdf", b"%PDF-1.4 consent", content_type="application/pdf")
    response = api(trial_manager).post(
        "/api/v1/consent-documents/",
        {
            "trial": trial.pk,
            "version": "2.0",
            "irb_approval_date": "2025-05-01",
            "effective_date": "2025-05-15",
            "file": upload,
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    assert len(response.json()["sha256"]) == 64


def test_it_signs_and_withdraws_consent(api, site_a, trial, coordinator_a):
    subject = f.SubjectFactory(site=site_a)
    document = f.ConsentDocumentFactory(trial=trial)
    client = api(coordinator_a)
    response = client.post(
        "/api/v1/consents/",
        {
            "subject": subject.pk,
            "document": document.pk,
            "scopes": ["imaging", "longitudinal_imaging"],
            "signed_at": f.days_ago(3).isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    consent_id = response.json()["id"]

    response = client.post(
        f"/api/v1/consents/{consent_id}/withdraw/",
        {"scopes": ["longitudinal_imaging"], "reason": "no follow-up"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert list(response.json()["withdrawn_scopes"]) == ["longitudinal_imaging"]
    assert Consent.objects.get().withdrawal_reason == "no follow-up"


def test_it_registers_and_releases_a_lot(api, trial, trial_manager):
    client = api(trial_manager)
    response = client.post(
        "/api/v1/nanoparticle-lots/",
        {
            "trial": trial.pk,
            "manufacturer": "Magnetic Insight",
            "product": "VivoTrax",
            "lot_number": "VT-1",
            "expiry_date": (timezone.localdate() + dt.timedelta(days=90)).isoformat(),
            "iron_mg_per_ml": "5.5",
            "core_size_nm": "4.2",
            "hydrodynamic_size_nm": "62",
            "polydispersity_index": "0.18",
            "coating": "carboxydextran",
            "certificate_of_analysis": SimpleUploadedFile("coa.pdf", b"CoA"),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["iron_mmol_per_l"] == "98.4869"
    lot_id = response.json()["id"]
    response = client.post(
        f"/api/v1/nanoparticle-lots/{lot_id}/qc-status/",
        {"qc_status": "released", "reason": "CoA checked and within specification"},
        format="json",
    )
    assert response.status_code == 200 and NanoparticleLot.objects.get().qc_status == "released"


def test_it_registers_labels_and_releases_a_batch(api, site_a, trial, coordinator_a):
    lot = f.NanoparticleLotFactory(trial=trial)
    client = api(coordinator_a)
    response = client.post(
        "/api/v1/cell-batches/",
        {
            "site": site_a.pk,
            "batch_code": "MSC-9",
            "product_type": "MSC",
            "chain_of_identity_id": "W123426000009-A1",
            "donation_id": "W123426000009",
            "allogeneic": True,
            "manufactured_at": f.days_ago(3).isoformat(),
            "cell_count": 1000,
            "viability_percent": "91.0",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["cells_remaining"] == 1000
    batch_id = response.json()["id"]
    response = client.post(
        f"/api/v1/cell-batches/{batch_id}/label/",
        {
            "nanoparticle_lot": lot.pk,
            "incubation_concentration_ug_fe_per_ml": "50",
            "iron_per_cell_pg": "10",
            "labelling_efficiency_percent": "95",
            "labelled_at": f.days_ago(2).isoformat(),
            "reason": "labelled",
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    response = client.post(
        f"/api/v1/cell-batches/{batch_id}/release/",
        {"release_status": "released", "reason": "QC passed"},
        format="json",
    )
    assert response.status_code == 200 and CellBatch.objects.get().release_status == "released"


def test_it_records_an_injection_and_shows_cells_remaining(api, ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    client = api(coordinator_a)
    response = client.post(
        "/api/v1/injections/",
        {
            "subject": subject.pk,
            "batch": batch.pk,
            "administered_cells": 25_000_000,
            "volume_ml": "2.0",
            "route": "intramyocardial",
            "anatomical_target": "LV anterior wall",
            "administered_at": f.days_ago(1).isoformat(),
            "administered_by": "investigator_a",
            "verified_by": "coordinator_a",
            "verifier_password": f.PASSWORD,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert Injection.objects.get().administered_by == investigator_a
    assert client.get(f"/api/v1/cell-batches/{batch.pk}/").json()["cells_remaining"] == 75_000_000
    assert client.get("/api/v1/injections/", {"subject": subject.pk}).json()["count"] == 1


def test_it_answers_a_refused_injection_in_the_error_shape_and_writes_nothing(
    api, ready, coordinator_a, nothing_written
):
    subject, _, batch = ready
    with nothing_written():
        response = api(coordinator_a).post(
            "/api/v1/injections/",
            {
                "subject": subject.pk,
                "batch": batch.pk,
                "administered_cells": 25_000_000,
                "volume_ml": "2.0",
                "route": "intramyocardial",
                "anatomical_target": "LV",
                "administered_at": f.days_ago(1).isoformat(),
                "administered_by": "coordinator_a",
                "verified_by": "coordinator_a",
                "verifier_password": f.PASSWORD,
            },
            format="json",
        )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "verifier_is_administrator"
    assert not AuditEvent.objects.filter(action=AuditAction.INJECTION_RECORDED).exists()


@pytest.mark.parametrize("who", ["monitor", "sponsor", "auditor"])
def test_it_refuses_writes_by_read_only_roles(request, api, site_a, who):
    response = api(request.getfixturevalue(who)).post(
        "/api/v1/subjects/", {"site": site_a.pk, "enrolment_date": "2026-01-05"}, format="json"
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
