"""injection_record: every rule refuses with its code and writes nothing; a good
injection writes one row and one audit event."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from config.api_errors import status_for
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.models import CellBatch, Injection, NanoparticleLot, Subject
from trials.services.consent import consent_withdraw
from trials.services.injections import injection_record


def _inject(actor, subject, batch, *, by, verifier, cells=10_000_000, at=None, **extra):
    return injection_record(
        **extra,
        actor=actor,
        subject=subject,
        batch=batch,
        administered_cells=cells,
        volume_ml=Decimal("2.0"),
        route=Injection.Route.INTRAMYOCARDIAL,
        anatomical_target="left ventricle",
        administered_at=at or f.days_ago(1),
        administered_by=by,
        verified_by=verifier,
        verifier_password=f.PASSWORD,
    )


def _refused(code, nothing_written, *args, **kwargs):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        _inject(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value


def test_it_records_an_injection_with_one_audit_event(ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    events_before = AuditEvent.objects.count()
    injection = _inject(coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a)

    assert Injection.objects.get() == injection
    assert AuditEvent.objects.count() == events_before + 1
    event = last_event()
    assert event.action == AuditAction.INJECTION_RECORDED
    assert event.actor == coordinator_a
    assert (event.site_id, event.subject_id, event.trial_id) == (subject.site_id, subject.pk, subject.trial_id)
    assert event.object_id == str(injection.pk)
    assert event.changes["administered_cells"] == [None, 10_000_000]
    assert event.changes["administered_by_id"] == [None, investigator_a.pk]


def test_it_records_the_planned_duration_of_the_administration(ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    injection = _inject(
        coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a, planned_duration_s=Decimal("600")
    )

    assert Injection.objects.get(pk=injection.pk).planned_duration_s == Decimal("600.000")
    assert last_event().changes["planned_duration_s"] == [None, "600.000"]


@pytest.mark.parametrize("given", [None, Decimal("0")], ids=["not given", "bolus"])
def test_a_planned_duration_is_optional_and_zero_is_a_bolus(ready, coordinator_a, investigator_a, given):
    subject, _, batch = ready
    injection = _inject(
        coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a, planned_duration_s=given
    )
    assert Injection.objects.get(pk=injection.pk).planned_duration_s == given


def test_it_refuses_a_negative_planned_duration(ready, coordinator_a, investigator_a, nothing_written):
    subject, _, batch = ready
    error = _refused(
        "planned_duration_s_negative",
        nothing_written,
        coordinator_a,
        subject,
        batch,
        by=investigator_a,
        verifier=coordinator_a,
        planned_duration_s=Decimal("-30"),
    )
    assert (error.field, status_for(error.code)) == ("planned_duration_s", 400)
    assert "negative" in error.message


def _api_body(subject, batch, **extra):
    return {
        "subject": subject.pk,
        "batch": batch.pk,
        "administered_cells": 25_000_000,
        "volume_ml": "2.0",
        "route": "intravenous",
        "anatomical_target": "peripheral vein, left arm",
        "administered_at": f.days_ago(1).isoformat(),
        "administered_by": "investigator_a",
        "verified_by": "coordinator_a",
        "verifier_password": f.PASSWORD,
        **extra,
    }


def test_it_records_the_planned_duration_through_the_api(api, ready, coordinator_a):
    subject, _, batch = ready
    response = api(coordinator_a).post(
        "/api/v1/injections/", _api_body(subject, batch, planned_duration_s=600), format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["planned_duration_s"] == "600.000"
    assert Injection.objects.get().planned_duration_s == Decimal("600.000")
    without = api(coordinator_a).post("/api/v1/injections/", _api_body(subject, batch), format="json")
    assert without.status_code == 201 and without.json()["planned_duration_s"] is None


def test_the_api_refuses_a_negative_planned_duration_and_writes_nothing(api, ready, coordinator_a, nothing_written):
    subject, _, batch = ready
    with nothing_written():
        response = api(coordinator_a).post(
            "/api/v1/injections/", _api_body(subject, batch, planned_duration_s="-1"), format="json"
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "planned_duration_s_negative"
    assert list(error["fields"]) == ["planned_duration_s"]


def test_it_refuses_without_imaging_consent(ready, coordinator_a, investigator_a, nothing_written):
    subject, consent, batch = ready
    consent.scope_imaging = False
    consent.save()
    _refused(
        "consent_missing", nothing_written, coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a
    )


def test_it_refuses_before_consent_was_signed(ready, coordinator_a, investigator_a, nothing_written):
    subject, consent, batch = ready
    at = consent.signed_at - dt.timedelta(hours=1)
    _refused(
        "consent_missing",
        nothing_written,
        coordinator_a,
        subject,
        batch,
        by=investigator_a,
        verifier=coordinator_a,
        at=at,
    )


def test_it_refuses_after_imaging_consent_was_withdrawn(ready, coordinator_a, investigator_a, nothing_written):
    subject, consent, batch = ready
    consent_withdraw(
        actor=coordinator_a, consent=consent, scopes=["imaging"], reason="subject asked", withdrawn_at=f.days_ago(2)
    )
    _refused(
        "consent_withdrawn", nothing_written, coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a
    )


def test_it_allows_an_injection_given_before_the_withdrawal(ready, coordinator_a, investigator_a):
    # Recorded late, but administered while consent was in force: the record is allowed.
    subject, consent, batch = ready
    consent_withdraw(
        actor=coordinator_a, consent=consent, scopes=["imaging"], reason="subject asked", withdrawn_at=f.days_ago(2)
    )
    injection = _inject(coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a, at=f.days_ago(3))
    assert injection.pk


def test_it_ignores_the_withdrawal_of_another_scope(ready, coordinator_a, investigator_a):
    subject, consent, batch = ready
    consent_withdraw(
        actor=coordinator_a, consent=consent, scopes=["data_sharing"], reason="no sharing", withdrawn_at=f.days_ago(2)
    )
    assert _inject(coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a).pk


@pytest.mark.parametrize("status", [CellBatch.ReleaseStatus.PENDING, CellBatch.ReleaseStatus.REJECTED])
def test_it_refuses_an_unreleased_batch(ready, coordinator_a, investigator_a, nothing_written, status):
    subject, _, batch = ready
    CellBatch.objects.filter(pk=batch.pk).update(release_status=status)
    _refused(
        "batch_not_released", nothing_written, coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a
    )


@pytest.mark.parametrize("qc_status", [NanoparticleLot.QcStatus.QUARANTINED, NanoparticleLot.QcStatus.REJECTED])
def test_it_refuses_a_batch_whose_lot_is_not_released(ready, coordinator_a, investigator_a, nothing_written, qc_status):
    subject, _, batch = ready
    NanoparticleLot.objects.filter(pk=batch.nanoparticle_lot_id).update(qc_status=qc_status)
    _refused(
        "lot_not_released", nothing_written, coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a
    )


def test_it_refuses_a_batch_whose_lot_expired(ready, coordinator_a, investigator_a, nothing_written):
    subject, _, batch = ready
    NanoparticleLot.objects.filter(pk=batch.nanoparticle_lot_id).update(
        expiry_date=timezone.localdate() - dt.timedelta(days=3)
    )
    _refused("lot_expired", nothing_written, coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a)


def test_it_refuses_an_autologous_batch_for_another_subject(
    ready, site_a, coordinator_a, investigator_a, nothing_written
):
    _, _, batch = ready
    other = f.SubjectFactory(site=site_a)
    f.ConsentFactory(subject=other)
    _refused(
        "autologous_mismatch", nothing_written, coordinator_a, other, batch, by=investigator_a, verifier=coordinator_a
    )


def test_it_gives_an_allogeneic_batch_to_any_consented_subject(site_a, coordinator_a, investigator_a):
    subject = f.SubjectFactory(site=site_a)
    f.ConsentFactory(subject=subject)
    batch = f.CellBatchFactory(donor_subject=None, site=site_a)
    assert batch.allogeneic
    assert _inject(coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a).pk


def test_it_refuses_when_the_verifier_is_the_administrator(ready, coordinator_a, nothing_written):
    subject, _, batch = ready
    _refused(
        "verifier_is_administrator",
        nothing_written,
        coordinator_a,
        subject,
        batch,
        by=coordinator_a,
        verifier=coordinator_a,
    )


def test_it_refuses_a_verifier_from_another_site(ready, coordinator_a, coordinator_b, nothing_written):
    subject, _, batch = ready
    _refused(
        "verified_by_not_at_site",
        nothing_written,
        coordinator_a,
        subject,
        batch,
        by=coordinator_a,
        verifier=coordinator_b,
    )


def test_it_refuses_more_cells_than_the_batch_has_left(ready, coordinator_a, investigator_a, nothing_written):
    subject, _, batch = ready
    _inject(coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a, cells=70_000_000)
    error = _refused(
        "insufficient_cells",
        nothing_written,
        coordinator_a,
        subject,
        batch,
        by=investigator_a,
        verifier=coordinator_a,
        cells=30_000_001,
    )
    assert "30,000,000 cells left" in error.message
    # Exactly what is left is fine.
    _inject(coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a, cells=30_000_000)
    assert sum(Injection.objects.values_list("administered_cells", flat=True)) == batch.cell_count


def test_it_locks_the_batch_row_while_counting_cells(ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    with CaptureQueriesContext(connection) as queries:
        _inject(coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a)
    batch_reads = [q["sql"] for q in queries if 'FROM "trials_cellbatch"' in q["sql"]]
    if connection.features.has_select_for_update:
        assert any("FOR UPDATE" in sql for sql in batch_reads), batch_reads
    else:
        # SQLite has no row locks: the write transaction (BEGIN IMMEDIATE) serialises writers.
        assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_it_refuses_a_subject_who_is_not_enrolled(ready, coordinator_a, investigator_a, nothing_written):
    subject, _, batch = ready
    Subject.objects.filter(pk=subject.pk).update(status=Subject.Status.WITHDRAWN)
    subject.refresh_from_db()
    _refused(
        "subject_not_enrolled",
        nothing_written,
        coordinator_a,
        subject,
        batch,
        by=investigator_a,
        verifier=coordinator_a,
    )


def test_it_refuses_a_batch_held_at_another_site(ready, site_b, coordinator_a, investigator_a, nothing_written):
    subject, _, _ = ready
    batch_b = f.CellBatchFactory(donor_subject=None, site=site_b)
    _refused(
        "batch_site_mismatch",
        nothing_written,
        coordinator_a,
        subject,
        batch_b,
        by=investigator_a,
        verifier=coordinator_a,
    )


@pytest.mark.parametrize("who", ["imaging_a", "coordinator_b", "monitor", "sponsor"])
def test_it_refuses_actors_without_the_coordinator_role_at_the_site(
    request, ready, coordinator_a, investigator_a, nothing_written, who
):
    subject, _, batch = ready
    error = _refused(
        "forbidden",
        nothing_written,
        request.getfixturevalue(who),
        subject,
        batch,
        by=investigator_a,
        verifier=coordinator_a,
    )
    assert status_for(error.code) == 403


def test_it_refuses_a_future_administration_time(ready, coordinator_a, investigator_a, nothing_written):
    subject, _, batch = ready
    _refused(
        "administered_at_in_future",
        nothing_written,
        coordinator_a,
        subject,
        batch,
        by=investigator_a,
        verifier=coordinator_a,
        at=timezone.now() + dt.timedelta(days=1),
    )
