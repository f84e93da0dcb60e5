"""Acknowledging a live alert: a clinician of the site, with a reason, audited; another
site's user and a sponsor get 404, a monitor may read but not acknowledge."""

from __future__ import annotations

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from live.models import LiveAlert
from live.services.alerts import alert_raise

URL = "/api/v1/live-alerts/"


@pytest.fixture
def alert(live):
    return alert_raise(
        session=live.session,
        kind="off_target_share",
        frame=120,
        acquired_at=1_700_000_000.0,
        value_percent=31.5,
        threshold_percent=20.0,
        message="Off-target iron 31.5 % of detected iron exceeds the trial's alert threshold 20 %.",
    )


def ack(api, user, alert, body):
    return api(user).post(f"{URL}{alert.pk}/acknowledge/", body, format="json")


def test_investigator_acknowledges_with_a_reason(api, investigator_a, live, alert):
    response = ack(api, investigator_a, alert, {"reason": "Infusion paused, lungs checked by ultrasound"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["acknowledged_by"] == "investigator_a"
    assert body["acknowledgement_reason"] == "Infusion paused, lungs checked by ultrasound"
    alert.refresh_from_db()
    assert alert.acknowledged_by == investigator_a and alert.acknowledged_at is not None
    event = AuditEvent.objects.get(action=AuditAction.LIVE_ALERT_ACKNOWLEDGED)
    assert event.object_id == str(alert.pk)
    assert event.reason == "Infusion paused, lungs checked by ultrasound"
    assert event.actor_id == investigator_a.pk
    # acknowledged: the same condition may be raised again
    again = alert_raise(session=live.session, kind="off_target_share", message="again", frame=300)
    assert again is not None and again.pk != alert.pk


@pytest.mark.parametrize("user", ["coordinator_a", "imaging_a"])
def test_coordinator_and_imaging_staff_acknowledge(api, request, alert, user):
    response = ack(api, request.getfixturevalue(user), alert, {"reason": "Seen on the monitor, dose complete"})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "n/a"}])
def test_a_reason_is_required(api, investigator_a, alert, body):
    response = ack(api, investigator_a, alert, body)
    assert response.status_code == 400
    assert "reason" in response.json()["error"]["fields"]
    alert.refresh_from_db()
    assert alert.acknowledged_at is None
    assert not AuditEvent.objects.filter(action=AuditAction.LIVE_ALERT_ACKNOWLEDGED).exists()


def test_twice_is_a_conflict(api, investigator_a, alert):
    assert ack(api, investigator_a, alert, {"reason": "Infusion paused by the investigator"}).status_code == 200
    response = ack(api, investigator_a, alert, {"reason": "Infusion paused by the investigator"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "alert_already_acknowledged"
    assert AuditEvent.objects.filter(action=AuditAction.LIVE_ALERT_ACKNOWLEDGED).count() == 1


@pytest.mark.parametrize("user", ["coordinator_b", "sponsor"])
def test_it_validates_ownership(api, request, alert, user):
    who = request.getfixturevalue(user)
    assert ack(api, who, alert, {"reason": "Infusion paused by the investigator"}).status_code == 404
    assert api(who).get(f"{URL}{alert.pk}/").status_code == 404
    assert api(who).get(URL, {"session": alert.session_id}).json()["results"] == []
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_a_monitor_reads_but_does_not_acknowledge(api, monitor, alert):
    listed = api(monitor).get(URL, {"session": alert.session_id})
    assert [a["id"] for a in listed.json()["results"]] == [alert.pk]
    response = ack(api, monitor, alert, {"reason": "Infusion paused by the investigator"})
    assert response.status_code == 403
    assert LiveAlert.objects.get(pk=alert.pk).acknowledged_at is None


def test_list_by_session(api, imaging_a, live, alert):
    response = api(imaging_a).get(URL, {"session": live.session.pk})
    assert response.status_code == 200
    [row] = response.json()["results"]
    assert row["kind"] == "off_target_share"
    assert row["frame"] == 120 and row["value_percent"] == 31.5 and row["threshold_percent"] == 20.0
    assert api(imaging_a).get(URL, {"session": live.session.pk + 1000}).json()["results"] == []
