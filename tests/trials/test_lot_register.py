from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

import pytest
from django.core.files.base import ContentFile

from audit.actions import AuditAction
from config.errors import RuleViolation
from tests.conftest import last_event
from trials.models import NanoparticleLot
from trials.services.lots import lot_register

COA = b"Certificate of analysis: Synomag-D, lot SD-2211"


def _register(actor, trial, **overrides):
    fields = dict(
        manufacturer="micromod",
        product="synomag-D",
        lot_number="SD-2211",
        expiry_date=dt.date(2027, 6, 30),
        core_size_nm=Decimal("30"),
        hydrodynamic_size_nm=Decimal("50"),
        polydispersity_index=Decimal("0.15"),
        coating="dextran",
        certificate_of_analysis=ContentFile(COA, name="coa.pdf"),
        iron_mg_per_ml=Decimal("10"),
    )
    fields.update(overrides)
    return lot_register(actor=actor, trial=trial, **fields)


def test_it_registers_a_quarantined_lot_with_mmol_computed_and_the_certificate_hashed(trial, trial_manager):
    lot = _register(trial_manager, trial)

    assert lot.qc_status == NanoparticleLot.QcStatus.QUARANTINED
    assert lot.iron_mmol_per_l == Decimal("179.0671")  # 10 / 55.845 * 1000
    assert lot.certificate_sha256 == hashlib.sha256(COA).hexdigest()
    event = last_event()
    assert (event.action, event.actor, event.trial_id) == (AuditAction.LOT_REGISTERED, trial_manager, trial.pk)
    assert event.changes["iron_mmol_per_l"] == [None, "179.0671"]


def test_it_computes_mg_per_ml_from_mmol_per_l(trial, trial_manager):
    lot = _register(trial_manager, trial, iron_mg_per_ml=None, iron_mmol_per_l=Decimal("98.4869"))
    assert lot.iron_mg_per_ml == Decimal("5.5000")


def test_it_accepts_both_concentrations_within_half_a_percent(trial, trial_manager):
    lot = _register(trial_manager, trial, iron_mg_per_ml=Decimal("10"), iron_mmol_per_l=Decimal("179.9"))
    assert lot.pk


def test_it_refuses_inconsistent_concentrations(trial, trial_manager, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _register(trial_manager, trial, iron_mg_per_ml=Decimal("10"), iron_mmol_per_l=Decimal("185"))
    # In words next to the field, never the database constraint's name (issue #18).
    assert (caught.value.code, caught.value.field) == ("iron_concentrations_disagree", "iron_mmol_per_l")


def test_it_needs_an_iron_concentration(trial, trial_manager, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _register(trial_manager, trial, iron_mg_per_ml=None)
    assert caught.value.code == "iron_concentration_missing"


def test_it_refuses_a_hydrodynamic_size_below_the_core(trial, trial_manager, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _register(trial_manager, trial, hydrodynamic_size_nm=Decimal("20"))
    assert (caught.value.code, caught.value.field) == ("hydrodynamic_smaller_than_core", "hydrodynamic_size_nm")


def test_it_refuses_a_lot_number_twice_for_one_manufacturer(trial, trial_manager, nothing_written):
    _register(trial_manager, trial)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _register(trial_manager, trial)
    assert (caught.value.code, caught.value.field) == ("lot_number_taken", "lot_number")


@pytest.mark.parametrize("who", ["coordinator_a", "coordinator_b", "imaging_a", "investigator_a", "monitor", "sponsor"])
def test_it_refuses_everyone_but_the_trial_manager(request, trial, nothing_written, who):
    actor = request.getfixturevalue(who)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _register(actor, trial)
    assert caught.value.code == "forbidden"
