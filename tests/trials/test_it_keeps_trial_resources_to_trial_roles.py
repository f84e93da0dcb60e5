"""Nanoparticle lots and consent documents are the trial's, shared by every site: a
coordinator of one site must not quarantine, reject, correct or replace them under the
other sites' feet. Only a trial-level role (the trial manager, a trial-wide membership)
changes them, through the service, so the API and the pages refuse alike."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

from audit.actions import AuditAction
from config.api_errors import status_for
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.models import NanoparticleLot
from trials.services.lots import lot_correct, lot_register


@pytest.fixture
def browser_client(client):
    def make(user):
        client.force_login(user)
        return client

    return make


@pytest.fixture
def lot(trial):
    return f.NanoparticleLotFactory(trial=trial, qc_status="released")


def _forbidden(response):
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert "trial_manager" in error["message"]


@pytest.mark.parametrize("who", ["coordinator_a", "coordinator_b"])
@pytest.mark.parametrize("qc_status", ["quarantined", "rejected"])
def test_it_refuses_a_site_coordinator_a_lot_qc_change_via_the_api(request, api, lot, who, qc_status, nothing_written):
    user = request.getfixturevalue(who)
    with nothing_written():
        _forbidden(
            api(user).post(
                f"/api/v1/nanoparticle-lots/{lot.pk}/qc-status/",
                {"qc_status": qc_status, "reason": "Deviation DV-17 under investigation", "confirm": True},
                format="json",
            )
        )
    lot.refresh_from_db()
    assert lot.qc_status == "released"


@pytest.mark.parametrize("qc_status", ["quarantined", "rejected"])
def test_it_refuses_another_sites_coordinator_a_lot_qc_change_on_the_page(
    browser_client, coordinator_b, lot, qc_status, nothing_written
):
    client = browser_client(coordinator_b)
    with nothing_written():
        assert client.get(f"/lots/{lot.pk}/qc/").status_code == 404
        response = client.post(
            f"/lots/{lot.pk}/qc/",
            {"qc_status": qc_status, "confirm": "on", "reason": "Deviation DV-17 under investigation"},
        )
        assert response.status_code == 404
    lot.refresh_from_db()
    assert lot.qc_status == "released"


def test_the_products_page_offers_lot_actions_only_to_the_trial_manager(
    browser_client, coordinator_b, trial_manager, lot
):
    page = browser_client(coordinator_b).get("/products/").content.decode()
    assert lot.lot_number in page
    assert f"/lots/{lot.pk}/qc/" not in page and f"/lots/{lot.pk}/edit/" not in page
    assert "/lots/new/" not in page
    page = browser_client(trial_manager).get("/products/").content.decode()
    assert f"/lots/{lot.pk}/qc/" in page and f"/lots/{lot.pk}/edit/" in page and "/lots/new/" in page


def test_the_trial_manager_quarantines_a_lot_on_the_page(browser_client, trial_manager, lot):
    response = browser_client(trial_manager).post(
        f"/lots/{lot.pk}/qc/", {"qc_status": "quarantined", "reason": "Deviation DV-17 under investigation"}
    )
    assert response.status_code == 302, response.content
    lot.refresh_from_db()
    assert lot.qc_status == "quarantined"
    assert (last_event().action, last_event().actor) == (AuditAction.LOT_QC_STATUS_CHANGED, trial_manager)


def test_the_trial_manager_quarantines_a_lot_via_the_api(api, trial_manager, lot):
    response = api(trial_manager).post(
        f"/api/v1/nanoparticle-lots/{lot.pk}/qc-status/",
        {"qc_status": "quarantined", "reason": "Deviation DV-17 under investigation"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["qc_status"] == "quarantined"
    event = last_event()
    assert (event.action, event.actor, event.changes) == (
        AuditAction.LOT_QC_STATUS_CHANGED,
        trial_manager,
        {"qc_status": ["released", "quarantined"]},
    )


@pytest.mark.parametrize("who", ["coordinator_a", "coordinator_b"])
def test_it_refuses_a_site_coordinator_a_lot_correction(request, lot, who, nothing_written):
    user = request.getfixturevalue(who)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        lot_correct(
            actor=user,
            lot=lot,
            reason="Expiry misread on the CoA",
            expiry_date=lot.expiry_date.replace(year=lot.expiry_date.year - 1),
        )
    assert (caught.value.code, status_for(caught.value.code)) == ("forbidden", 403)


def test_it_refuses_a_site_coordinator_a_lot_registration(trial, coordinator_b, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        lot_register(
            actor=coordinator_b,
            trial=trial,
            manufacturer="micromod",
            product="perimag",
            lot_number="PM-1",
            expiry_date=f.timezone.localdate(),
            core_size_nm=19,
            hydrodynamic_size_nm=130,
            polydispersity_index="0.2",
            coating="dextran",
            certificate_of_analysis=ContentFile(b"CoA", name="coa.txt"),
            iron_mg_per_ml="8.5",
        )
    assert caught.value.code == "forbidden"
    assert not NanoparticleLot.objects.exists()


def test_it_refuses_a_site_coordinator_a_new_consent_document_version(api, trial, coordinator_b, nothing_written):
    with nothing_written():
        _forbidden(
            api(coordinator_b).post(
                "/api/v1/consent-documents/",
                {
                    "trial": trial.pk,
                    "version": "9.0",
                    "irb_approval_date": "2025-05-01",
                    "effective_date": "2025-05-15",
                    "file": ContentFile(b"%PDF-1.4 consent", name="consent-v9.pdf"),
                },
                format="multipart",
            )
        )


def test_the_trial_manager_adds_a_consent_document_version(api, trial, trial_manager):
    response = api(trial_manager).post(
        "/api/v1/consent-documents/",
        {
            "trial": trial.pk,
            "version": "9.0",
            "irb_approval_date": "2025-05-01",
            "effective_date": "2025-05-15",
            "file": ContentFile(b"%PDF-1.4 consent", name="consent-v9.pdf"),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    assert last_event().action == AuditAction.CONSENT_DOCUMENT_CREATED


def test_the_trial_manager_sees_no_subject_of_any_site(api, site_a, site_b, trial_manager):
    f.SubjectFactory(site=site_a)
    f.SubjectFactory(site=site_b)
    assert api(trial_manager).get("/api/v1/subjects/").json()["count"] == 0


def test_the_trial_manager_finds_the_lots_from_the_dashboard(browser_client, trial_manager, site_a, lot):
    page = browser_client(trial_manager).get("/").content.decode()
    assert 'href="/products/"' in page and "You hold no role" not in page
