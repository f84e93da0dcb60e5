"""A decision that cannot be undone (a lot or a batch rejected, a subject withdrawn or
completed) is taken only when the person confirms it, knowing the consequences: the
service refuses it otherwise (400 ``confirmation_required`` on the field ``confirm``),
so the API and the pages ask alike."""

from __future__ import annotations

import pytest

from audit.actions import AuditAction
from config.api_errors import status_for
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.services.batches import batch_set_release_status
from trials.services.lots import lot_set_qc_status

REASON = "Endotoxin above specification on retest"


@pytest.fixture
def browser_client(client):
    def make(user):
        client.force_login(user)
        return client

    return make


@pytest.fixture
def lot(trial):
    return f.NanoparticleLotFactory(trial=trial, qc_status="quarantined")


def test_it_refuses_a_lot_rejection_without_confirmation(lot, trial_manager, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        lot_set_qc_status(actor=trial_manager, lot=lot, qc_status="rejected", reason=REASON)
    error = caught.value
    assert (error.code, error.field, status_for(error.code)) == ("confirmation_required", "confirm", 400)
    assert "final" in error.message and lot.lot_number in error.message
    lot.refresh_from_db()
    assert lot.qc_status == "quarantined"


def test_the_api_refuses_a_lot_rejection_without_confirm_true(api, lot, trial_manager, nothing_written):
    client = api(trial_manager)
    for body in (
        {"qc_status": "rejected", "reason": REASON},
        {"qc_status": "rejected", "reason": REASON, "confirm": False},
    ):
        with nothing_written():
            response = client.post(f"/api/v1/nanoparticle-lots/{lot.pk}/qc-status/", body, format="json")
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "confirmation_required"
        assert "cannot be undone" in error["message"] and list(error["fields"]) == ["confirm"]


def test_the_api_rejects_a_lot_with_confirm_true(api, lot, trial_manager):
    response = api(trial_manager).post(
        f"/api/v1/nanoparticle-lots/{lot.pk}/qc-status/",
        {"qc_status": "rejected", "reason": REASON, "confirm": True},
        format="json",
    )
    assert response.status_code == 200, response.json()
    lot.refresh_from_db()
    assert lot.qc_status == "rejected"
    assert last_event().action == AuditAction.LOT_QC_STATUS_CHANGED


def test_a_reversible_lot_change_needs_no_confirmation(lot, trial_manager):
    lot_set_qc_status(actor=trial_manager, lot=lot, qc_status="released", reason="CoA reviewed, QC passed")
    lot.refresh_from_db()
    assert lot.qc_status == "released"


def test_the_page_asks_for_the_confirmation_before_rejecting_a_lot(browser_client, lot, trial_manager, nothing_written):
    client = browser_client(trial_manager)
    assert 'name="confirm"' in client.get(f"/lots/{lot.pk}/qc/").content.decode()
    with nothing_written():
        response = client.post(f"/lots/{lot.pk}/qc/", {"qc_status": "rejected", "reason": REASON})
    assert response.status_code == 400
    assert "confirm" in response.context["form"].errors
    response = client.post(f"/lots/{lot.pk}/qc/", {"qc_status": "rejected", "reason": REASON, "confirm": "on"})
    assert response.status_code == 302
    lot.refresh_from_db()
    assert lot.qc_status == "rejected"


def test_it_refuses_a_batch_rejection_without_confirmation(ready, coordinator_a, api, nothing_written):
    batch = ready[2]
    with nothing_written():
        response = api(coordinator_a).post(
            f"/api/v1/cell-batches/{batch.pk}/release/", {"release_status": "rejected", "reason": REASON}, format="json"
        )
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "confirmation_required"
    batch_set_release_status(actor=coordinator_a, batch=batch, release_status="rejected", reason=REASON, confirm=True)
    batch.refresh_from_db()
    assert batch.release_status == "rejected"


@pytest.mark.parametrize("status", ["withdrawn", "completed"])
def test_it_refuses_a_final_subject_status_without_confirmation(ready, coordinator_a, api, status, nothing_written):
    subject = ready[0]
    with nothing_written():
        response = api(coordinator_a).post(
            f"/api/v1/subjects/{subject.pk}/status/",
            {"status": status, "reason": "Subject asked to leave the trial"},
            format="json",
        )
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "confirmation_required"
    response = api(coordinator_a).post(
        f"/api/v1/subjects/{subject.pk}/status/",
        {"status": status, "reason": "Subject asked to leave the trial", "confirm": True},
        format="json",
    )
    assert response.status_code == 200, response.json()
    subject.refresh_from_db()
    assert subject.status == status
