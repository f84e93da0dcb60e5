"""A scan goes received -> validating -> validated -> reconstructing -> reconstructed ->
quantified through the services the tasks call, and its metrics match the phantom."""

from __future__ import annotations

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.models import Measurement, Reconstruction
from imaging.services.scan_claims import _finish, scan_claim
from imaging.services.scan_steps import scan_quantify, scan_reconstruct, scan_validate
from tests.imaging.helpers import process, relative_error, uploaded_scan

TARGET_TOLERANCE = 0.10  # relative, retention of the target
OFF_TARGET_TOLERANCE = 0.15  # relative, off-target share


def test_it_takes_a_scan_through_every_status_with_an_audit_event_each(api, pipeline):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    scan = process(scan)
    assert scan.status == "quantified"
    assert scan.system_matrix_id == pipeline.system_matrix.pk
    assert scan.progress_stage == "quantified" and scan.progress_percent == 100.0
    transitions = [
        e.changes["status"]
        for e in AuditEvent.objects.filter(action=AuditAction.SCAN_STATUS_CHANGED, object_id=str(scan.pk)).order_by(
            "sequence"
        )
    ]
    assert transitions == [
        [None, "received"],
        ["received", "validating"],
        ["validating", "validated"],
        ["validated", "reconstructing"],
        ["reconstructing", "reconstructed"],
        ["reconstructed", "quantified"],
    ]
    assert AuditEvent.objects.filter(action=AuditAction.RECONSTRUCTION_COMPLETED).count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.METRICS_RECORDED).count() == 1


def test_it_measures_retention_and_off_target_like_the_simulated_truth(api, pipeline):
    sim = pipeline.sim
    scan = process(uploaded_scan(api, pipeline, sim["measurement"]))
    injected = sim["injected_iron_ng"]
    target_truth = sum(v for k, v in sim["truth"].items() if sim["kinds"][k] == "target")
    off_truth = sum(v for k, v in sim["truth"].items() if sim["kinds"][k] != "target")
    summary = scan.metrics_summary
    assert summary["injected_iron_ng"] == __import__("pytest").approx(injected, rel=1e-6)
    assert relative_error(summary["retention_percent"], 100 * target_truth / injected) < TARGET_TOLERANCE
    assert relative_error(summary["off_target_percent"], 100 * off_truth / injected) < OFF_TARGET_TOLERANCE
    by_name = {m.roi_name: m for m in Measurement.objects.filter(scan=scan)}
    assert set(by_name) == set(sim["truth"])
    heart = by_name["heart"]
    assert relative_error(heart.iron_ng, sim["truth"]["heart"]) < TARGET_TOLERANCE
    assert heart.detected and heart.uncertainty_ng > 0 and heart.detection_limit_ng > 0
    assert heart.cell_count == __import__("pytest").approx(heart.iron_ng * 1000 / 12.5)
    assert heart.off_target_percent is None
    assert relative_error(by_name["liver"].iron_ng, sim["truth"]["liver"]) < OFF_TARGET_TOLERANCE


def test_it_never_makes_a_second_result_when_a_step_runs_twice(api, pipeline):
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    events = AuditEvent.objects.count()
    # A redelivered task of another id finds every step done and exits quietly.
    assert scan_validate(scan_id=scan.pk, token="task-2") is None
    assert scan_reconstruct(scan_id=scan.pk, token="task-2") is None
    assert scan_quantify(scan_id=scan.pk, token="task-2") is None
    assert Reconstruction.objects.filter(scan=scan).count() == 1
    assert Measurement.objects.filter(scan=scan).count() == 4
    assert AuditEvent.objects.count() == events


def test_it_lets_a_redelivered_task_resume_its_own_claim_as_a_new_attempt(api, pipeline):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    scan_validate(scan_id=scan.pk, token="t")
    # The worker claimed the reconstruction and died before recording anything.
    claimed = scan_claim(scan_id=scan.pk, from_status="validated", to_status="reconstructing", token="t")
    first_attempt = claimed.attempt
    # Another task cannot take it while the claim is fresh ...
    assert scan_reconstruct(scan_id=scan.pk, token="other") is None
    # ... but the broker's redelivery of the same task (same id) resumes it.
    scan_reconstruct(scan_id=scan.pk, token="t")
    scan.refresh_from_db()
    assert scan.status == "reconstructed" and scan.attempt == first_attempt + 1
    assert list(Reconstruction.objects.filter(scan=scan).values_list("attempt", flat=True)) == [first_attempt + 1]


def test_it_discards_the_result_of_a_worker_that_lost_its_claim(api, pipeline, settings):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    scan_validate(scan_id=scan.pk, token="t")
    first = scan_claim(scan_id=scan.pk, from_status="validated", to_status="reconstructing", token="slow")
    settings.IMAGING_CLAIM_LEASE_SECONDS = 0  # the slow worker stopped renewing: its claim is stale
    scan_reconstruct(scan_id=scan.pk, token="fast")
    # The slow worker finishes late: its attempt is no longer the scan's.
    assert _finish(first, "slow", "reconstructed", fields={}) is False
    assert Reconstruction.objects.filter(scan=scan).count() == 1
