from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from audit.actions import AuditAction
from audit.models import AuditEvent
from trials.models import CellBatch, Injection, Membership, NanoparticleLot, Subject, SubjectIdentity, Trial

USERS = {
    "coordinator_a",
    "imaging_a",
    "investigator_a",
    "coordinator_b",
    "imaging_b",
    "monitor",
    "sponsor",
    "auditor",
    "trial_manager",
}


def _load() -> str:
    out = StringIO()
    call_command("load_demo", stdout=out)
    return out.getvalue()


def test_it_creates_the_demo_trial_with_its_fixed_users_through_the_services(db):
    output = _load()

    assert set(get_user_model().objects.values_list("username", flat=True)) == USERS
    assert all(get_user_model().objects.get(username=u).check_password("trial-demo-2026") for u in USERS)
    assert "trial-demo-2026" in output and all(u in output for u in USERS)
    trial = Trial.objects.get(protocol_number="MPI-CT-001")
    assert sorted(trial.sites.values_list("code", flat=True)) == ["A", "B"]
    assert Membership.objects.get(user__username="auditor").role == "auditor"
    assert Subject.objects.count() == SubjectIdentity.objects.count() == 6
    assert set(NanoparticleLot.objects.values_list("qc_status", flat=True)) == {"released", "quarantined", "rejected"}
    assert Injection.objects.count() == 3
    assert CellBatch.objects.filter(release_status="released").count() == 4
    # The trail tells the story: one event per service call.
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        AuditAction.TRIAL_CREATED,
        AuditAction.SUBJECT_ENROLLED,
        AuditAction.CONSENT_SIGNED,
        AuditAction.LOT_QC_STATUS_CHANGED,
        AuditAction.BATCH_LABELLED,
        AuditAction.INJECTION_RECORDED,
        AuditAction.CONSENT_WITHDRAWN,
    } <= actions
    call_command("verify_audit")


def test_it_is_idempotent(db):
    _load()
    counts = (AuditEvent.objects.count(), Subject.objects.count(), get_user_model().objects.count())
    output = _load()
    assert "already loaded" in output
    assert (AuditEvent.objects.count(), Subject.objects.count(), get_user_model().objects.count()) == counts


def test_it_refuses_to_run_in_production(db, settings):
    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="production"):
        _load()
    assert not Trial.objects.exists() and not get_user_model().objects.exists()
