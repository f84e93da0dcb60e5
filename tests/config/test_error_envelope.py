"""Every API error answers the JSON envelope {"error": {"code", "message", "fields"?}}, and
no input answers 500: the inputs a fuzzer found crashing the API are refused with a 400
that names the offending input, and nothing is written."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from audit.models import AuditEvent
from imaging.models import Upload
from tests import factories as f
from tests.imaging import factories as imf
from tests.imaging import tus

BEYOND_64_BITS = str(2**64)


def _error(response, status, code=None):
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


ID_FILTERS = [
    "/api/v1/sites/?trial",
    "/api/v1/subjects/?trial",
    "/api/v1/subjects/?site",
    "/api/v1/consent-documents/?trial",
    "/api/v1/consents/?subject",
    "/api/v1/consents/?document",
    "/api/v1/nanoparticle-lots/?trial",
    "/api/v1/cell-batches/?nanoparticle_lot",
    "/api/v1/cell-batches/?donor_subject",
    "/api/v1/injections/?batch",
    "/api/v1/scans/?subject",
    "/api/v1/scans/?site",
    "/api/v1/exports/?trial",
    "/api/v1/alerts/?scan",
    "/api/v1/measurements/?scan",
    "/api/v1/rois/?subject",
    "/api/v1/scanners/?site",
    "/api/v1/system-matrices/?scanner",
    "/api/v1/dicom-sends/?destination",
]


@pytest.mark.parametrize("value", [BEYOND_64_BITS, "-" + BEYOND_64_BITS, "1.5", "0"])
@pytest.mark.parametrize("url", ID_FILTERS)
def test_it_refuses_an_id_filter_that_is_not_a_64_bit_id(api, auditor, coordinator_a, url, value):
    error = _error(api(coordinator_a).get(f"{url}={value}"), 400, "invalid")
    assert list(error["fields"]) == [url.rsplit("?", 1)[1]]


def test_it_still_filters_by_a_valid_id(api, site_a, coordinator_a):
    f.SubjectFactory(site=site_a)
    assert api(coordinator_a).get(f"/api/v1/subjects/?site={site_a.pk}").json()["count"] == 1


@pytest.mark.parametrize("value", ["false", "true", BEYOND_64_BITS, "1e3", ""])
def test_it_refuses_a_trial_on_verify_that_is_not_an_id(api, auditor, value):
    before = AuditEvent.objects.count()
    error = _error(api(auditor).post(f"/api/v1/audit-events/verify/?trial={value}"), 400, "invalid")
    assert "trial" in error["fields"]
    assert AuditEvent.objects.count() == before


def test_it_still_verifies_a_trial(api, trial, auditor):
    response = api(auditor).post(f"/api/v1/audit-events/verify/?trial={trial.pk}")
    assert response.status_code == 200


@pytest.mark.parametrize("hours", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_it_refuses_upload_metadata_hours_that_are_not_finite(api, ready, imaging_a, hours):
    subject, _, batch = ready
    injection = f.InjectionFactory(subject=subject, batch=batch)
    scanner = imf.ScannerFactory(site=subject.site)
    before = AuditEvent.objects.count()
    response = tus.create(
        api(imaging_a),
        length=100,
        subject=subject.pk,
        injection=injection.pk,
        scanner=scanner.pk,
        hours=hours,
        sha256="0" * 64,
    )
    error = _error(response, 400, "invalid")
    assert "hours" in error["fields"]
    assert Upload.objects.count() == 0
    assert AuditEvent.objects.count() == before


def test_it_refuses_upload_metadata_ids_beyond_64_bits(api, ready, imaging_a):
    subject, _, _ = ready
    response = tus.create(
        api(imaging_a), length=100, subject=subject.pk, injection=BEYOND_64_BITS, scanner=1, hours=1.0, sha256="0" * 64
    )
    assert "injection" in _error(response, 400, "invalid")["fields"]
    assert Upload.objects.count() == 0


def test_it_answers_an_unhandled_exception_with_a_500_envelope_without_internals(
    api, coordinator_a, monkeypatch, caplog
):
    from trials import selectors

    def broken(user):
        raise RuntimeError("secret internals: postgres://user:hunter2@db/trials")

    monkeypatch.setattr("trials.api.SubjectViewSet.selector", staticmethod(broken))
    with caplog.at_level(logging.ERROR, logger="config.api_errors"):
        response = api(coordinator_a).get("/api/v1/subjects/")
    _error(response, 500, "server_error")
    assert "hunter2" not in response.content.decode() and "RuntimeError" not in response.content.decode()
    assert "hunter2" in caplog.text  # logged, with its traceback, for the operator
    assert selectors  # the real selector is untouched outside this test


def test_it_answers_an_oversized_body_with_413(api, site_a, coordinator_a, settings, nothing_written):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    with nothing_written():
        response = api(coordinator_a).post(
            "/api/v1/subjects/",
            {"site": site_a.pk, "enrolment_date": "2026-01-05", "padding": "x" * 2000},
            format="json",
        )
    _error(response, 413, "request_too_large")


def test_it_answers_an_unknown_api_url_with_a_404_envelope(client, coordinator_a):
    client.force_login(coordinator_a)
    _error(client.get("/api/v1/no-such-thing/"), 404, "not_found")


def test_it_answers_a_wrong_method_with_405_and_a_wrong_content_type_with_415(api, coordinator_a):
    _error(api(coordinator_a).delete("/api/v1/subjects/"), 405, "method_not_allowed")
    _error(
        api(coordinator_a).post("/api/v1/subjects/", b"<x/>", content_type="application/xml"),
        415,
        "unsupported_media_type",
    )


def test_it_answers_a_malformed_json_body_with_400(api, coordinator_a):
    _error(
        api(coordinator_a).post("/api/v1/subjects/", b"{not json", content_type="application/json"), 400, "parse_error"
    )


def test_it_answers_a_django_level_500_under_api_with_the_envelope(coordinator_a, monkeypatch):
    # A crash outside any DRF view (here: in a middleware) reaches Django's handler500.
    def boom(self, request):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("audit.middleware.RequestContextMiddleware.__call__", boom)
    client = Client(raise_request_exception=False)
    _error(client.get("/api/v1/subjects/"), 500, "server_error")
    page = client.get("/subjects/")
    assert page.status_code == 500 and page["Content-Type"].startswith("text/html")
    assert b"Something went wrong" in page.content and b"secret internals" not in page.content


@pytest.mark.parametrize(
    "query", ["subject=" + BEYOND_64_BITS, "subject=\u00b2", "action=\u00b2", "action=" + BEYOND_64_BITS]
)
def test_it_reads_audit_event_filters_that_are_not_ids_as_matching_nothing(api, auditor, query):
    response = api(auditor).get(f"/api/v1/audit-events/?{query}")
    assert response.status_code == 200
    assert response.json()["count"] == 0


@pytest.mark.parametrize("object_id", [BEYOND_64_BITS, "\u00b2", "-1"])
def test_it_answers_signatures_of_an_id_that_is_not_one_with_404(api, coordinator_a, object_id):
    _error(
        api(coordinator_a).get(f"/api/v1/signatures/?object_type=trials.subject&object_id={object_id}"),
        404,
        "not_found",
    )


@pytest.mark.parametrize("value", [BEYOND_64_BITS, "\u00b2"])
def test_it_refuses_a_time_course_subject_that_is_not_an_id(api, coordinator_a, value):
    _error(api(coordinator_a).get(f"/api/v1/time-course/?subject={value}"), 400, "subject_required")


@pytest.mark.parametrize("page_size", ["0", "-1", "abc", "1.5", "\u00b2", ""])
def test_it_refuses_a_page_size_that_is_not_a_whole_number_from_1(api, coordinator_a, page_size):
    error = _error(api(coordinator_a).get(f"/api/v1/subjects/?page_size={page_size}"), 400, "invalid")
    assert list(error["fields"]) == ["page_size"]


def test_it_reads_a_page_size_over_the_maximum_as_the_maximum(api, coordinator_a):
    assert api(coordinator_a).get("/api/v1/subjects/?page_size=100000").status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "route=",
        "route=oral",
        "withdrawn=maybe",
        "withdrawn=",
        "route=intravenous&route=x",
        "page=1&page=2",
        "page_size=5&page_size=x",
    ],
)
def test_it_refuses_a_filter_value_the_schema_does_not_allow(api, coordinator_a, query):
    url = "/api/v1/consents/" if "withdrawn" in query else "/api/v1/injections/"
    error = _error(api(coordinator_a).get(f"{url}?{query}"), 400, "invalid")
    assert list(error["fields"]) == [query.split("=")[0]]


@pytest.mark.parametrize("page", ["", "0", "abc", "1.0"])
def test_it_refuses_a_page_that_is_not_a_whole_number_from_1(api, coordinator_a, page):
    error = _error(api(coordinator_a).get(f"/api/v1/subjects/?page={page}"), 400, "invalid")
    assert list(error["fields"]) == ["page"]


def test_it_answers_a_page_past_the_last_with_404(api, coordinator_a):
    _error(api(coordinator_a).get("/api/v1/subjects/?page=99"), 404, "not_found")


def test_it_refuses_a_username_with_a_nul_character_without_a_server_error(api, coordinator_a):
    # PostgreSQL refuses NUL in query text; the lookup of verified_by must never reach it.
    from trials.models import Injection

    response = api(coordinator_a).post(
        "/api/v1/injections/",
        {
            "subject": 1,
            "batch": 1,
            "administered_cells": 1,
            "volume_ml": "1",
            "route": "intravenous",
            "anatomical_target": "heart",
            "administered_at": "2026-01-01T00:00:00Z",
            "administered_by": "coordinator_a",
            "verified_by": "a\x00b",
            "verifier_password": "x",
        },
        format="json",
    )
    assert response.status_code == 400
    assert "verified_by" in response.json()["error"]["fields"]
    assert Injection.objects.count() == 0
