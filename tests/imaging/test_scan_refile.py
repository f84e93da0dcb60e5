"""Re-filing a scan uploaded against the wrong subject or time point
(imaging.services.scan_refile): audited with the old and new filing, signatures on its
results invalidated, the pipeline run again when the injection changes, and refused
across sites, without consent, without a reason, or while a worker holds the scan."""

from __future__ import annotations

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.signatures import signature_apply
from config.errors import RuleViolation
from imaging.models import Alert, Measurement, Scan, ScanStatus
from imaging.services.scan_refile import scan_refile
from tests import factories as f
from tests.conftest import last_event
from tests.imaging.conftest import define_rois
from tests.imaging.helpers import process, uploaded_scan
from tests.web.scans import scans_at

REASON = "Uploaded under the neighbouring subject's code by mistake"


@pytest.fixture
def quantified(api, pipeline):
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    assert scan.status == ScanStatus.QUANTIFIED, scan.status_reason
    return scan


def _second_subject(pipeline, site, *, cells_factor=2.0):
    """Another subject at ``site`` with consent, ROIs and an injection of twice the cells
    (same tracer lot, so the library's calibration fits)."""
    subject = f.SubjectFactory(site=site)
    f.ConsentFactory(subject=subject)
    batch = f.CellBatchFactory(donor_subject=subject, nanoparticle_lot=pipeline.batch.nanoparticle_lot)
    injection = f.InjectionFactory(
        batch=batch, subject=subject, administered_cells=round(pipeline.injection.administered_cells * cells_factor)
    )
    define_rois(subject, pipeline.sim["rois"])
    return subject, injection


def test_refiling_to_another_subject_reruns_the_pipeline_with_the_new_injection(
    pipeline, quantified, site_a, investigator_a
):
    before_retention = quantified.metrics_summary["retention_percent"]
    reconstruction = quantified.reconstructions.get()
    signature = signature_apply(signer=investigator_a, password=f.PASSWORD, obj=reconstruction, meaning="approval")
    Alert.objects.get_or_create(
        scan=quantified,
        kind="off_target",
        defaults=dict(subject=pipeline.subject, value_percent=30, threshold_percent=20, message="x"),
    )
    alert_value = Alert.objects.get(scan=quantified).value_percent
    other, injection = _second_subject(pipeline, site_a)
    queued = []

    scan = scan_refile(
        actor=pipeline.user,
        scan=quantified,
        subject=other,
        injection_id=injection.pk,
        hours_after_injection=48.0,
        reason=REASON,
        then=queued.append,
    )

    scan.refresh_from_db()
    assert (scan.subject_id, scan.injection_id, scan.hours_after_injection) == (other.pk, injection.pk, 48.0)
    assert scan.status == ScanStatus.RECEIVED and scan.metrics_summary is None and scan.system_matrix_id is None
    assert queued == [scan]  # the interface's next task recorded in the same transaction
    assert not Alert.objects.filter(scan=scan).exists()
    event = AuditEvent.objects.filter(action=AuditAction.SCAN_REFILED).get()
    assert event.reason == REASON and event.actor_username == pipeline.user.username
    assert event.subject_id == other.pk
    assert event.changes["subject"] == [pipeline.subject.pk, other.pk]
    assert event.changes["injection"] == [pipeline.injection.pk, injection.pk]
    assert event.changes["hours_after_injection"] == [24.0, 48.0]
    assert event.changes["status"] == [ScanStatus.QUANTIFIED, ScanStatus.RECEIVED]
    assert event.changes["alerts_withdrawn"][0][0]["value_percent"] == alert_value
    signature.refresh_from_db()
    assert not signature.valid and REASON in signature.invalidation_reason
    invalidated = AuditEvent.objects.get(action=AuditAction.SIGNATURE_INVALIDATED)
    assert invalidated.subject_id == pipeline.subject.pk  # recorded where the signature was given

    scan = process(scan, token="task-2")
    assert scan.status == ScanStatus.QUANTIFIED, scan.status_reason
    assert scan.reconstructions.count() == 2  # the first attempt is kept
    newest = scan.reconstructions.order_by("-attempt").first()
    assert Measurement.objects.filter(reconstruction=newest, roi__subject=other).exists()
    # Twice the injected iron, the same image: half the retention (within 0.5 %).
    assert scan.metrics_summary["retention_percent"] == pytest.approx(before_retention / 2, rel=5e-3)


def test_refiling_the_time_point_only_keeps_the_results_and_invalidates_signatures(
    pipeline, quantified, investigator_a
):
    reconstruction = quantified.reconstructions.get()
    signature = signature_apply(signer=investigator_a, password=f.PASSWORD, obj=reconstruction, meaning="review")
    summary = quantified.metrics_summary
    queued = []

    scan = scan_refile(
        actor=pipeline.user,
        scan=quantified,
        subject=pipeline.subject,
        injection_id=pipeline.injection.pk,
        hours_after_injection=72.0,
        reason="Time point entered as 24 h, the scan log says 72 h",
        then=queued.append,
    )

    scan.refresh_from_db()
    assert scan.hours_after_injection == 72.0 and scan.status == ScanStatus.QUANTIFIED
    assert scan.metrics_summary == summary and queued == []
    assert last_event().changes == {
        "hours_after_injection": [24.0, 72.0],
        "subject_code": [pipeline.subject.code, pipeline.subject.code],
    }
    signature.refresh_from_db()
    assert not signature.valid


@pytest.fixture
def plain_scan(site_a):
    """A scan row at site A (no file, no pipeline) of a consented subject."""
    scan = scans_at(site_a, 1, status=ScanStatus.QUANTIFIED)[0]
    f.ConsentFactory(subject=scan.subject)
    return scan


def _refused(code, nothing_changed, **kwargs):
    with nothing_changed(), pytest.raises(RuleViolation) as caught:
        scan_refile(**kwargs)
    assert caught.value.code == code, caught.value.message


def _target(site, *, consent=True):
    subject = f.SubjectFactory(site=site)
    if consent:
        f.ConsentFactory(subject=subject)
    return subject, f.InjectionFactory(subject=subject, batch=f.CellBatchFactory(donor_subject=subject))


def test_it_refuses_a_subject_at_another_site(plain_scan, site_b, imaging_a, nothing_changed):
    subject, injection = _target(site_b)
    _refused(
        "refile_cross_site",
        nothing_changed,
        actor=imaging_a,
        scan=plain_scan,
        subject=subject,
        injection_id=injection.pk,
        hours_after_injection=24.0,
        reason=REASON,
    )


def test_it_refuses_a_subject_without_imaging_consent(plain_scan, site_a, imaging_a, nothing_changed):
    subject, injection = _target(site_a, consent=False)
    _refused(
        "consent_missing",
        nothing_changed,
        actor=imaging_a,
        scan=plain_scan,
        subject=subject,
        injection_id=injection.pk,
        hours_after_injection=24.0,
        reason=REASON,
    )


def test_it_refuses_another_subjects_injection(plain_scan, site_a, imaging_a, nothing_changed):
    subject, _ = _target(site_a)
    _refused(
        "injection_not_found",
        nothing_changed,
        actor=imaging_a,
        scan=plain_scan,
        subject=subject,
        injection_id=plain_scan.injection_id,
        hours_after_injection=24.0,
        reason=REASON,
    )


@pytest.mark.parametrize("reason", ["", "typo"])
def test_it_refuses_without_a_reason(plain_scan, imaging_a, nothing_changed, reason):
    _refused(
        "reason_required" if not reason else "reason_insufficient",
        nothing_changed,
        actor=imaging_a,
        scan=plain_scan,
        subject=plain_scan.subject,
        injection_id=plain_scan.injection_id,
        hours_after_injection=48.0,
        reason=reason,
    )


def test_it_refuses_a_role_that_does_not_upload(plain_scan, investigator_a, nothing_changed):
    _refused(
        "forbidden",
        nothing_changed,
        actor=investigator_a,
        scan=plain_scan,
        subject=plain_scan.subject,
        injection_id=plain_scan.injection_id,
        hours_after_injection=48.0,
        reason=REASON,
    )


def test_it_refuses_a_scan_a_worker_holds(plain_scan, imaging_a, nothing_changed):
    Scan.objects.filter(pk=plain_scan.pk).update(status=ScanStatus.RECONSTRUCTING)
    _refused(
        "scan_busy",
        nothing_changed,
        actor=imaging_a,
        scan=plain_scan,
        subject=plain_scan.subject,
        injection_id=plain_scan.injection_id,
        hours_after_injection=48.0,
        reason=REASON,
    )


def test_it_refuses_no_change(plain_scan, imaging_a, nothing_changed):
    _refused(
        "no_change",
        nothing_changed,
        actor=imaging_a,
        scan=plain_scan,
        subject=plain_scan.subject,
        injection_id=plain_scan.injection_id,
        hours_after_injection=plain_scan.hours_after_injection,
        reason=REASON,
    )
