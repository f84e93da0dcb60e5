"""The off-target alert at its boundary. The trial's threshold is a limit the off-target
share must *exceed* to raise an alert: DOMAIN.md defines the off-target fraction but not
the comparison, and the platform says "exceeds the trial's alert threshold" (the alert)
and "Off-target above the trial's threshold" (the dashboard). So a scan exactly at the
threshold raises none; one a hundredth of a percent above raises one, audited."""

from __future__ import annotations

from decimal import Decimal

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging import processing
from imaging.cache import SystemMatrixCache
from imaging.models import Alert, Measurement, ScanStatus
from imaging.services.scan_steps import scan_quantify, scan_reconstruct, scan_validate
from tests.imaging.helpers import uploaded_scan

THRESHOLD = Decimal("25.00")


@pytest.fixture
def reconstructed(api, pipeline, trial):
    trial.off_target_alert_percent = THRESHOLD
    trial.save()
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    scan_validate(scan_id=scan.pk, token="task-1")
    scan_reconstruct(scan_id=scan.pk, token="task-1", cache=SystemMatrixCache(10**9))
    scan.refresh_from_db()
    assert scan.status == ScanStatus.RECONSTRUCTED
    return scan


def _measuring(monkeypatch, off_target_percent: float) -> None:
    """The real quantification, its off-target share set to the value under test."""
    real = processing.quantify

    def quantify(*args, **kwargs):
        per_roi, summary = real(*args, **kwargs)
        return per_roi, {**summary, "off_target_percent": off_target_percent}

    monkeypatch.setattr(processing, "quantify", quantify)


@pytest.mark.parametrize(
    "off_target, alerted",
    [
        (24.99, False),  # just below
        (25.0, False),  # exactly at the threshold: not above it
        (25.01, True),  # just above
    ],
)
def test_it_alerts_only_when_off_target_exceeds_the_threshold(reconstructed, monkeypatch, off_target, alerted):
    _measuring(monkeypatch, off_target)
    scan = scan_quantify(scan_id=reconstructed.pk, token="task-1")
    assert scan.status == ScanStatus.QUANTIFIED and Measurement.objects.filter(scan=scan).exists()
    assert scan.metrics_summary["off_target_percent"] == off_target
    events = AuditEvent.objects.filter(action=AuditAction.OFF_TARGET_ALERT_RAISED)
    if alerted:
        alert = Alert.objects.get(scan=scan)
        assert (alert.kind, alert.value_percent, alert.threshold_percent) == ("off_target", off_target, THRESHOLD)
        assert [e.object_id for e in events] == [str(alert.pk)]
    else:
        assert not Alert.objects.exists() and not events.exists()
