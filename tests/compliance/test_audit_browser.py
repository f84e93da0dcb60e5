from __future__ import annotations

import pytest
from django.test import Client

from audit.actions import AuditAction
from audit.models import AuditEvent
from trials.services.subjects import subject_change_status


@pytest.fixture
def changed(visit, coordinator_a):
    subject_change_status(actor=coordinator_a, subject=visit, status="completed", reason="visit 4 done", confirm=True)
    return visit


def _page(user, **query):
    client = Client()
    client.force_login(user)
    return client, client.get("/compliance/audit/", query)


def test_it_shows_the_change_with_old_and_new_values_to_an_auditor(auditor, changed):
    _, response = _page(auditor, action="SUBJECT_STATUS_CHANGED")
    html = response.content.decode()
    assert response.status_code == 200
    assert '<td class="old">enrolled</td><td class="new">completed</td>' in html
    assert "visit 4 done" in html and "coordinator_a" in html
    assert html.count("SUBJECT_STATUS_CHANGED</td>") == 1


def test_it_filters_by_subject_user_action_and_date(api, monitor, changed, coordinator_a):
    client = api(monitor)
    by_subject = client.get("/api/v1/audit-events/", {"subject": changed.code}).json()["results"]
    assert by_subject and {e["subject_id"] for e in by_subject} == {changed.pk}
    by_user = client.get("/api/v1/audit-events/", {"user": "coordinator_a"}).json()["results"]
    assert [e["action_name"] for e in by_user] == ["SUBJECT_STATUS_CHANGED"]
    assert by_user[0]["changes"] == {"status": ["enrolled", "completed"]}
    today = by_user[0]["occurred_at"][:10]
    assert (
        client.get("/api/v1/audit-events/", {"date_from": today, "action": "SUBJECT_STATUS_CHANGED"}).json()["count"]
        == 1
    )
    assert client.get("/api/v1/audit-events/", {"date_to": "2000-01-01"}).json()["count"] == 0


def test_it_verifies_the_chain_and_audits_the_verification(auditor, trial, changed):
    client, _ = _page(auditor)
    response = client.post("/compliance/audit/", {"trial": trial.pk})
    assert response.status_code == 200 and "Chain intact" in response.content.decode()
    event = AuditEvent.objects.get(action=AuditAction.AUDIT_TRAIL_VERIFIED)
    assert event.actor == auditor and event.trial_id == trial.pk and event.changes["ok"] is True


def test_it_shows_nothing_to_other_roles(api, coordinator_a, sponsor, investigator_a, trial, changed):
    for user in (coordinator_a, sponsor, investigator_a):
        _, response = _page(user)
        # No audit browser exists for a sponsor (404, as every page outside their view).
        assert response.status_code == (404 if user == sponsor else 403)
        assert api(user).get("/api/v1/audit-events/").json()["count"] == 0
        verify = api(user).post(f"/api/v1/audit-events/verify/?trial={trial.pk}")
        assert verify.status_code == 403
    assert not AuditEvent.objects.filter(action=AuditAction.AUDIT_TRAIL_VERIFIED).exists()


def test_it_verifies_through_the_api(api, monitor, trial, changed):
    result = api(monitor).post(f"/api/v1/audit-events/verify/?trial={trial.pk}").json()
    assert result["ok"] is True and len(result["head_hash"]) == 64
