"""lot_correct: expiry, iron, sizes, PDI and coating are correctable with a reason; one
iron unit recomputes the other; the lot's identity and certificate are not."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.actions import AuditAction
from config.api_errors import status_for
from tests import factories as f
from tests.trials.corrections import head_sequence, one_event_since, refused
from trials.services.lots import lot_correct


@pytest.fixture
def lot(trial):
    return f.NanoparticleLotFactory(trial=trial, iron_mg_per_ml=Decimal("5.5000"))  # 98.4869 mmol/L


def _correct(actor, lot, reason="CoA value transcribed wrongly", **fields):
    return lot_correct(actor=actor, lot=lot, reason=reason, **fields)


def _refused(code, nothing_written, actor, lot, **fields):
    return refused(code, nothing_written, _correct, lot, actor=actor, lot=lot, **fields)


def test_it_corrects_mg_per_ml_and_recomputes_mmol_per_l_in_one_audit_event(lot, trial_manager):
    start = head_sequence()
    _correct(trial_manager, lot, iron_mg_per_ml=Decimal("28"))

    lot.refresh_from_db()
    # 28 mg/mL = 28 g/L; / 55.845 g/mol = 0.5013878 mol/L.
    assert (lot.iron_mg_per_ml, lot.iron_mmol_per_l) == (Decimal("28.0000"), Decimal("501.3878"))
    event = one_event_since(start)
    assert (event.action, event.actor, event.trial_id, event.object_id) == (
        AuditAction.LOT_UPDATED,
        trial_manager,
        lot.trial_id,
        str(lot.pk),
    )
    assert event.changes == {"iron_mg_per_ml": ["5.5000", "28.0000"], "iron_mmol_per_l": ["98.4869", "501.3878"]}
    assert event.reason == "CoA value transcribed wrongly"


def test_it_corrects_mmol_per_l_and_recomputes_mg_per_ml(lot, trial_manager):
    _correct(trial_manager, lot, iron_mmol_per_l=Decimal("501.3878"))
    lot.refresh_from_db()
    assert lot.iron_mg_per_ml == Decimal("28.0000")


def test_it_refuses_two_concentrations_that_disagree(lot, trial_manager, nothing_written):
    _refused(
        "iron_concentrations_disagree",
        nothing_written,
        trial_manager,
        lot,
        iron_mg_per_ml=Decimal("28"),
        iron_mmol_per_l=Decimal("98.4869"),
    )


def test_it_corrects_sizes_pdi_coating_and_expiry(lot, trial_manager):
    expiry = timezone.localdate() + dt.timedelta(days=200)
    start = head_sequence()
    _correct(
        trial_manager,
        lot,
        core_size_nm=Decimal("5.1"),
        hydrodynamic_size_nm=Decimal("60"),
        polydispersity_index=Decimal("0.2"),
        coating="dextran",
        expiry_date=expiry,
    )
    assert set(one_event_since(start).changes) == {
        "core_size_nm",
        "hydrodynamic_size_nm",
        "polydispersity_index",
        "coating",
        "expiry_date",
    }


@pytest.mark.parametrize("reason", ["", " ", None])
def test_it_requires_a_reason(lot, trial_manager, nothing_written, reason):
    _refused("reason_required", nothing_written, trial_manager, lot, reason=reason, coating="dextran")


@pytest.mark.parametrize(
    "fields", [{}, {"coating": "carboxydextran", "core_size_nm": Decimal("4.2")}], ids=["empty", "same values"]
)
def test_it_refuses_a_correction_that_changes_nothing(lot, trial_manager, nothing_written, fields):
    _refused("no_change", nothing_written, trial_manager, lot, **fields)


@pytest.mark.parametrize(
    "field",
    ["lot_number", "manufacturer", "product", "trial", "certificate_of_analysis", "certificate_sha256", "qc_status"],
)
def test_it_refuses_the_lots_identity_and_certificate(lot, trial_manager, nothing_written, field):
    _refused(f"{field}_not_correctable", nothing_written, trial_manager, lot, **{field: "X"})


def test_it_refuses_a_hydrodynamic_size_below_the_core(lot, trial_manager, nothing_written):
    _refused("hydrodynamic_smaller_than_core", nothing_written, trial_manager, lot, hydrodynamic_size_nm=Decimal("4.1"))


def test_it_refuses_a_core_larger_than_the_hydrodynamic_size(lot, trial_manager, nothing_written):
    _refused("hydrodynamic_smaller_than_core", nothing_written, trial_manager, lot, core_size_nm=Decimal("62.01"))


@pytest.mark.parametrize("pdi", [Decimal("1.001"), Decimal("-0.1")])
def test_it_refuses_a_pdi_outside_0_to_1(lot, trial_manager, nothing_written, pdi):
    _refused("polydispersity_index_out_of_range", nothing_written, trial_manager, lot, polydispersity_index=pdi)


def test_it_refuses_an_expiry_before_the_lot_was_used(lot, site_a, trial_manager, nothing_written):
    f.CellBatchFactory(donor_subject=f.SubjectFactory(site=site_a), nanoparticle_lot=lot, labelled_at=f.days_ago(19))
    _refused(
        "lot_expiry_before_use",
        nothing_written,
        trial_manager,
        lot,
        expiry_date=timezone.localdate() - dt.timedelta(days=25),
    )


@pytest.mark.parametrize(
    "who", ["coordinator_a", "coordinator_b", "imaging_a", "investigator_a", "monitor", "sponsor", "auditor"]
)
def test_it_lets_only_the_trial_manager_correct(request, lot, nothing_written, who):
    error = _refused("forbidden", nothing_written, request.getfixturevalue(who), lot, coating="dextran")
    assert status_for(error.code) == 403


# --------------------------------------------------------------------------- API


def _url(lot):
    return reverse("nanoparticle-lot-detail", kwargs={"pk": lot.pk})


def test_it_corrects_through_the_api(api, lot, trial_manager):
    response = api(trial_manager).patch(
        _url(lot), {"iron_mg_per_ml": "28", "reason": "CoA value typed wrongly"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert (response.json()["iron_mg_per_ml"], response.json()["iron_mmol_per_l"]) == ("28.0000", "501.3878")


def test_it_answers_404_for_a_lot_of_another_trial(api, trial_manager, nothing_written):
    other = f.NanoparticleLotFactory()
    client = api(trial_manager)
    with nothing_written():
        response = client.patch(
            _url(other), {"coating": "dextran", "reason": "typo on the CRF, source checked"}, format="json"
        )
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize("who", ["monitor", "sponsor"])
def test_it_validates_ownership(request, api, lot, nothing_written, who):
    client = api(request.getfixturevalue(who))
    with nothing_written():
        response = client.patch(
            _url(lot), {"coating": "dextran", "reason": "typo on the CRF, source checked"}, format="json"
        )
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
