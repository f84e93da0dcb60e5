from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from audit.actions import AuditAction
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.models import CellBatch
from trials.services.batches import batch_register


def _register(actor, site, **overrides):
    fields = dict(
        batch_code="MSC-0007",
        product_type="MSC",
        chain_of_identity_id="W123426000007-CT01",
        donation_id="W123426000007",
        manufactured_at=f.days_ago(3),
        cell_count=120_000_000,
        viability_percent=Decimal("93.1"),
        allogeneic=True,
    )
    fields.update(overrides)
    return batch_register(actor=actor, site=site, **fields)


def test_it_registers_a_pending_batch_with_one_audit_event(site_a, coordinator_a):
    batch = _register(coordinator_a, site_a)
    assert (batch.release_status, batch.trial, batch.nanoparticle_lot) == ("pending", site_a.trial, None)
    event = last_event()
    assert (event.action, event.actor, event.site_id) == (AuditAction.BATCH_REGISTERED, coordinator_a, site_a.pk)
    assert event.changes["chain_of_identity_id"] == [None, "W123426000007-CT01"]


def test_it_registers_an_autologous_batch_for_its_donor(site_a, coordinator_a):
    donor = f.SubjectFactory(site=site_a)
    batch = _register(coordinator_a, site_a, donor_subject=donor, allogeneic=False)
    assert batch.autologous and batch.donor_subject == donor
    assert last_event().subject_id == donor.pk


@pytest.mark.parametrize("allogeneic,with_donor", [(False, False), (True, True)])
def test_it_refuses_donor_and_allogeneic_flag_that_disagree(
    site_a, coordinator_a, nothing_written, allogeneic, with_donor
):
    donor = f.SubjectFactory(site=site_a) if with_donor else None
    with nothing_written(), pytest.raises(ValidationError):
        _register(coordinator_a, site_a, donor_subject=donor, allogeneic=allogeneic)


@pytest.mark.parametrize("coi", ["Erika Mustermann", "w123426000007", "W1234-26-000007"])
def test_it_refuses_a_chain_of_identity_id_outside_the_isbt128_shape(site_a, coordinator_a, nothing_written, coi):
    with nothing_written(), pytest.raises(ValidationError) as caught:
        _register(coordinator_a, site_a, chain_of_identity_id=coi)
    assert "chain_of_identity_id" in caught.value.message_dict


def test_it_refuses_an_identifier_that_carries_the_donors_record_number(site_a, coordinator_a, nothing_written):
    donor = f.SubjectFactory(site=site_a)
    f.SubjectIdentityFactory(subject=donor, medical_record_number="441234")
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _register(
            coordinator_a, site_a, donor_subject=donor, allogeneic=False, chain_of_identity_id="W123426441234-CT01"
        )
    assert caught.value.code == "identifier_contains_phi"


def test_it_refuses_a_batch_code_twice_in_a_trial(site_a, coordinator_a, nothing_written):
    _register(coordinator_a, site_a)
    with nothing_written(), pytest.raises(ValidationError):
        _register(coordinator_a, site_a, chain_of_identity_id="W123426000008-CT01")
    assert CellBatch.objects.count() == 1


def test_it_refuses_a_coordinator_of_another_site(site_a, coordinator_b, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _register(coordinator_b, site_a)
    assert caught.value.code == "forbidden"
