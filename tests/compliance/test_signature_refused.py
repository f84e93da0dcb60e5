from __future__ import annotations

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Signature
from compliance.signatures import signature_apply
from config.api_errors import status_for
from config.errors import RuleViolation
from tests.factories import PASSWORD


def test_it_refuses_a_wrong_password_and_audits_the_refusal(visit, investigator_a):
    with pytest.raises(RuleViolation) as refused:
        signature_apply(signer=investigator_a, password="not-my-password", obj=visit, meaning="approval")
    assert refused.value.code == "signature_refused"
    assert Signature.objects.count() == 0
    event = AuditEvent.objects.get(action=AuditAction.SIGNATURE_REFUSED)
    assert event.actor == investigator_a and event.subject_id == visit.pk
    assert not AuditEvent.objects.filter(action=AuditAction.SIGNATURE_APPLIED).exists()


@pytest.mark.parametrize("who", ["coordinator_a", "monitor", "investigator_b"])
def test_it_lets_only_investigators_of_the_site_sign(request, visit, who, nothing_written):
    signer = request.getfixturevalue(who)
    with nothing_written(), pytest.raises(RuleViolation) as refused:
        signature_apply(signer=signer, password=PASSWORD, obj=visit, meaning="approval")
    assert refused.value.code == "forbidden" and status_for(refused.value.code) == 403
    assert Signature.objects.count() == 0


def test_it_signs_through_the_api_and_lists_by_record(api, visit, investigator_a, coordinator_b):
    client = api(investigator_a)
    response = client.post(
        "/api/v1/signatures/",
        {"object_type": "trials.subject", "object_id": str(visit.pk), "meaning": "approval", "password": PASSWORD},
    )
    assert response.status_code == 201, response.json()
    assert response.json()["printed_name"] == "investigator_a" and response.json()["valid"] is True
    listed = client.get("/api/v1/signatures/", {"object_type": "trials.subject", "object_id": visit.pk}).json()
    assert [s["id"] for s in listed] == [response.json()["id"]]
    # Another site's user cannot even see the record.
    other = api(coordinator_b).get("/api/v1/signatures/", {"object_type": "trials.subject", "object_id": visit.pk})
    assert other.status_code == 404


def test_it_answers_a_wrong_password_through_the_api_with_403(api, visit, investigator_a):
    response = api(investigator_a).post(
        "/api/v1/signatures/",
        {
            "object_type": "trials.subject",
            "object_id": str(visit.pk),
            "meaning": "approval",
            "password": "wrong-password",
        },
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "signature_refused"
    assert Signature.objects.count() == 0
