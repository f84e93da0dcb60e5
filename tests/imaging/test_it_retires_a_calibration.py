"""POST /api/v1/system-matrices/{id}/retire/: imaging staff of the scanner's site retire a
calibration with a reason; new uploads stop matching it; the audit trail says who and why;
every refusal writes nothing."""

from __future__ import annotations

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from config.errors import RuleViolation
from imaging.models import SystemMatrix
from imaging.services.scanners import match_system_matrix

pytestmark = pytest.mark.django_db

REASON = "superseded by the recalibration of the receive coil"


def _url(sm) -> str:
    return f"/api/v1/system-matrices/{sm.pk}/retire/"


def test_imaging_staff_retire_a_calibration_with_a_reason(api, pipeline):
    sm = pipeline.system_matrix
    acquisition = {
        "base_frequency_hz": sm.base_frequency_hz,
        "dividers": sm.dividers,
        "drive_amplitudes_t": sm.drive_amplitudes_t,
    }
    assert match_system_matrix(pipeline.scanner, pipeline.injection, acquisition) == sm

    response = api(pipeline.user).post(_url(sm), {"reason": REASON}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["active"] is False
    sm.refresh_from_db()
    assert sm.active is False and sm.retired_at is not None
    event = AuditEvent.objects.filter(action=AuditAction.SYSTEM_MATRIX_RETIRED).get()
    assert (event.actor_username, event.object_id, event.reason) == (pipeline.user.username, str(sm.pk), REASON)
    with pytest.raises(RuleViolation):  # no active calibration fits any more
        match_system_matrix(pipeline.scanner, pipeline.injection, acquisition)


@pytest.mark.parametrize(
    "who, body, status, code",
    [
        ("imaging_a", {}, 400, None),  # no reason
        ("imaging_a", {"reason": "n/a"}, 400, "reason_insufficient"),  # a placeholder is no reason
        ("monitor", {"reason": REASON}, 403, "forbidden"),  # reads the library, may not change it
        ("coordinator_b", {"reason": REASON}, 404, "not_found"),  # another site's calibration
    ],
)
def test_a_refused_retirement_changes_nothing(api, pipeline, request, who, body, status, code):
    sm = pipeline.system_matrix
    events = AuditEvent.objects.count()

    response = api(request.getfixturevalue(who)).post(_url(sm), body, format="json")

    assert response.status_code == status, response.content
    if code is not None:
        assert response.json()["error"]["code"] == code
    assert SystemMatrix.objects.get(pk=sm.pk).active is True
    assert AuditEvent.objects.count() == events


def test_a_retired_calibration_cannot_be_retired_again(api, pipeline):
    client = api(pipeline.user)
    assert client.post(_url(pipeline.system_matrix), {"reason": REASON}, format="json").status_code == 200
    events = AuditEvent.objects.count()

    again = client.post(_url(pipeline.system_matrix), {"reason": REASON}, format="json")

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_retired"
    assert AuditEvent.objects.count() == events
