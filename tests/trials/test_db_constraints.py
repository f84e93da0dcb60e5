"""The database itself refuses rows that break an invariant, whoever writes them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from tests import factories as f
from trials.models import CellBatch, Injection, Membership, NanoparticleLot, Role, Trial


def _refused_by_database(write):
    with pytest.raises(IntegrityError), transaction.atomic():
        write()


def test_it_holds_trial_and_site_invariants(site_a):
    _refused_by_database(
        lambda: Trial.objects.filter(pk=site_a.trial_id).update(off_target_alert_percent=Decimal("101"))
    )
    _refused_by_database(lambda: f.TrialFactory(protocol_number=site_a.trial.protocol_number))
    _refused_by_database(lambda: f.SiteFactory(trial=site_a.trial, code="A"))


def test_it_holds_a_site_role_at_a_site_and_a_trial_wide_role_at_none(site_a):
    user = f.UserFactory()
    _refused_by_database(
        lambda: Membership.objects.create(user=user, trial=site_a.trial, site=None, role=Role.COORDINATOR)
    )
    _refused_by_database(
        lambda: Membership.objects.create(user=user, trial=site_a.trial, site=site_a, role=Role.MONITOR)
    )
    Membership.objects.create(user=user, trial=site_a.trial, site=site_a, role=Role.COORDINATOR)
    _refused_by_database(
        lambda: Membership.objects.create(user=user, trial=site_a.trial, site=site_a, role=Role.COORDINATOR)
    )


def test_it_keeps_subject_codes_unique_per_trial(site_a, site_b):
    f.SubjectFactory(site=site_a, code="X-1")
    _refused_by_database(lambda: f.SubjectFactory(site=site_b, code="X-1"))


def test_it_keeps_consent_invariants(trial, site_a):
    _refused_by_database(
        lambda: f.ConsentDocumentFactory(
            trial=trial, irb_approval_date=dt.date(2025, 2, 1), effective_date=dt.date(2025, 1, 31)
        )
    )
    document = f.ConsentDocumentFactory(trial=trial, version="1")
    _refused_by_database(lambda: f.ConsentDocumentFactory(trial=trial, version="1"))
    subject = f.SubjectFactory(site=site_a)
    _refused_by_database(
        lambda: f.ConsentFactory(
            subject=subject,
            document=document,
            scope_imaging=False,
            scope_longitudinal_imaging=False,
            scope_data_sharing=False,
        )
    )
    consent = f.ConsentFactory(subject=subject, document=document)
    _refused_by_database(
        lambda: (
            type(consent).objects.filter(pk=consent.pk).update(withdrawn_at=consent.signed_at - dt.timedelta(days=1))
        )
    )


@pytest.mark.parametrize(
    "change",
    [
        {"iron_mg_per_ml": Decimal("0")},
        {"iron_mmol_per_l": Decimal("-1")},
        {"core_size_nm": Decimal("0")},
        {"hydrodynamic_size_nm": Decimal("3")},  # below the 4.2 nm core
        {"polydispersity_index": Decimal("1.2")},
        {"qc_status": "approved"},
    ],
)
def test_it_keeps_nanoparticle_lot_invariants(trial, change):
    lot = f.NanoparticleLotFactory(trial=trial)
    _refused_by_database(lambda: NanoparticleLot.objects.filter(pk=lot.pk).update(**change))


def test_it_keeps_lot_numbers_unique_per_manufacturer(trial):
    f.NanoparticleLotFactory(trial=trial, manufacturer="micromod", lot_number="L1")
    f.NanoparticleLotFactory(trial=trial, manufacturer="Magnetic Insight", lot_number="L1")
    _refused_by_database(lambda: f.NanoparticleLotFactory(trial=trial, manufacturer="micromod", lot_number="L1"))


@pytest.mark.parametrize(
    "change",
    [
        {"allogeneic": True},  # autologous donor set, but flagged allogeneic
        {"donor_subject": None},  # autologous without a donor
        {"cell_count": 0},
        {"viability_percent": Decimal("100.5")},
        {"labelling_efficiency_percent": Decimal("-1")},
        {"labelled_at": None},  # half-recorded labelling
        {"release_status": "shipped"},
    ],
)
def test_it_keeps_cell_batch_invariants(site_a, change):
    batch = f.CellBatchFactory(donor_subject=f.SubjectFactory(site=site_a))
    _refused_by_database(lambda: CellBatch.objects.filter(pk=batch.pk).update(**change))


def test_it_keeps_chain_of_identity_ids_unique(site_a):
    batch = f.CellBatchFactory(donor_subject=None, site=site_a)
    _refused_by_database(
        lambda: f.CellBatchFactory(donor_subject=None, site=site_a, chain_of_identity_id=batch.chain_of_identity_id)
    )


@pytest.mark.parametrize(
    "change",
    [
        {"administered_cells": 0},
        {"volume_ml": Decimal("0")},
        {"planned_duration_s": Decimal("-1")},
        {"route": "oral"},
        "same_verifier",
    ],
)
def test_it_keeps_injection_invariants(site_a, change):
    injection = f.InjectionFactory(batch=f.CellBatchFactory(donor_subject=f.SubjectFactory(site=site_a)))
    if change == "same_verifier":
        change = {"verified_by": injection.administered_by}
    _refused_by_database(lambda: Injection.objects.filter(pk=injection.pk).update(**change))
