"""A subject's time course (series ready to plot) and off-target alerts."""

from __future__ import annotations

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.models import Alert
from tests.imaging.helpers import process, uploaded_scan


def test_it_returns_plot_ready_series_by_roi_and_time(api, pipeline, simulate):
    for hours, seed in ((0, 1), (24, 2)):
        process(uploaded_scan(api, pipeline, simulate(seed)["measurement"], hours=hours))
    client = api(pipeline.user)
    body = client.get(f"/api/v1/subjects/{pipeline.subject.pk}/time-course/").json()
    assert body == client.get("/api/v1/time-course/", {"subject": pipeline.subject.pk}).json()
    assert body["subject"] == pipeline.subject.pk
    assert abs(body["injected_iron_ng"] - pipeline.sim["injected_iron_ng"]) < 1
    series = {(s["roi_kind"], s["roi_name"]): s["points"] for s in body["series"]}
    assert set(series) == {("target", "heart"), ("lungs", "lung_left"), ("lungs", "lung_right"), ("liver", "liver")}
    heart = series[("target", "heart")]
    assert [p["hours"] for p in heart] == [0, 24]
    assert set(heart[0]) >= {"hours", "iron_ng", "uncertainty_ng", "retention_percent", "scan_id"}
    assert 55 < heart[0]["retention_percent"] < 75


def test_it_raises_an_audited_alert_when_off_target_passes_the_trial_threshold(api, pipeline, trial):
    trial.off_target_alert_percent = 20  # the phantom holds about 36 % off target
    trial.save()
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    alert = Alert.objects.get(scan=scan)
    assert alert.kind == "off_target" and alert.threshold_percent == 20
    assert alert.value_percent == scan.metrics_summary["off_target_percent"]
    event = AuditEvent.objects.get(action=AuditAction.OFF_TARGET_ALERT_RAISED)
    assert event.object_id == str(alert.pk) and event.subject_id == pipeline.subject.pk
    listed = api(pipeline.user).get("/api/v1/alerts/").json()["results"]
    assert [a["id"] for a in listed] == [alert.pk]


def test_it_raises_no_alert_below_the_threshold(api, pipeline, trial):
    trial.off_target_alert_percent = 60
    trial.save()
    process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    assert Alert.objects.count() == 0
    assert not AuditEvent.objects.filter(action=AuditAction.OFF_TARGET_ALERT_RAISED).exists()
