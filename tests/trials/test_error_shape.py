"""One JSON error shape for 400, 401, 403, 404 and 409."""

from __future__ import annotations

from tests import factories as f


def _assert_shape(response, status, code):
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def test_it_answers_400_with_field_errors(api, site_a, coordinator_a):
    error = _assert_shape(
        api(coordinator_a).post("/api/v1/subjects/", {"site": site_a.pk}, format="json"), 400, "invalid"
    )
    assert error["fields"] == {"enrolment_date": ["This field is required."]}


def test_it_answers_400_for_an_id_the_user_may_not_see(api, site_b, coordinator_a):
    error = _assert_shape(
        api(coordinator_a).post(
            "/api/v1/subjects/", {"site": site_b.pk, "enrolment_date": "2026-01-05"}, format="json"
        ),
        400,
        "invalid",
    )
    assert "site" in error["fields"]


def test_it_refuses_a_request_without_credentials(api, site_a):
    # 403, not 401: DRF answers 401 only when the first authentication class sends a
    # WWW-Authenticate challenge, and SessionAuthentication (listed first) sends none.
    response = api().get("/api/v1/subjects/")
    _assert_shape(response, response.status_code, "not_authenticated")
    assert response.status_code in (401, 403)


def test_it_answers_403_for_a_role_that_may_not_write(api, site_a, imaging_a):
    error = _assert_shape(
        api(imaging_a).post("/api/v1/subjects/", {"site": site_a.pk, "enrolment_date": "2026-01-05"}, format="json"),
        403,
        "forbidden",
    )
    assert "coordinator" in error["message"]


def test_it_answers_404_for_another_sites_record(api, site_a, coordinator_b):
    subject = f.SubjectFactory(site=site_a)
    _assert_shape(api(coordinator_b).get(f"/api/v1/subjects/{subject.pk}/"), 404, "not_found")


def test_it_answers_409_with_the_rule_code_and_field(api, site_a, trial_manager):
    lot = f.NanoparticleLotFactory(trial=site_a.trial, qc_status="rejected")
    error = _assert_shape(
        api(trial_manager).post(
            f"/api/v1/nanoparticle-lots/{lot.pk}/qc-status/",
            {"qc_status": "released", "reason": "QC retest passed"},
            format="json",
        ),
        409,
        "lot_rejected",
    )
    assert error["fields"] == {"qc_status": [error["message"]]}
