"""A sponsor reads the API through one de-identified view, the sponsor data set's:
pseudonyms, shifted days, no chain-of-identity or donation ids, no free text, and only
subjects whose data-sharing consent is in force. Other roles' views are unchanged."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse

from compliance.models import Export
from tests.compliance.conftest import unzip
from tests.compliance.sponsor_cohort import REASONS, cohort, real_dates, secrets  # noqa: F401 - fixture
from trials import deidentify
from trials.selectors import consent_allows

# Keys whose values are the identified form of something the sponsor gets de-identified.
IDENTIFIED_KEYS = {
    "code",
    "subject_code",
    "enrolment_date",
    "signed_at",
    "withdrawn_at",
    "withdrawal_reason",
    "chain_of_identity_id",
    "donation_id",
    "batch_code",
    "donor_subject_code",
    "administered_at",
    "manufactured_at",
    "labelled_at",
    "anatomical_target",
    "administered_by",
    "verified_by",
    "obtained_by",
    "filename",
    "status_reason",
    "acquisition",
    "validation_report",
    "files",
    "signatures",
    "name",
    "time_zone",
    "site_code_real",
}


def _endpoints(c):
    """(label, url, the shared subject's record the answer must carry, if one)."""
    s = c.shared
    return [
        ("subjects", reverse("subject-list"), None),
        ("subject", reverse("subject-detail", args=[s.subject.pk]), "subject"),
        ("consents", reverse("consent-list"), None),
        ("consent", reverse("consent-detail", args=[s.consent.pk]), "consent"),
        ("injections", reverse("injection-list"), None),
        ("injection", reverse("injection-detail", args=[s.injection.pk]), "injection"),
        ("cell-batches", reverse("cell-batch-list"), None),
        ("cell-batch", reverse("cell-batch-detail", args=[s.batch.pk]), None),
        ("nanoparticle-lots", reverse("nanoparticle-lot-list"), None),
        ("sites", reverse("site-list"), None),
        ("trials", reverse("trial-list"), None),
        ("consent-documents", reverse("consent-document-list"), None),
        ("scans", reverse("scan-list"), None),
        ("scan", reverse("scan-detail", args=[s.scan.pk]), None),
        ("scan-metrics", reverse("scan-metrics", args=[s.scan.pk]), None),
        ("scan-dicom-exports", reverse("scan-dicom-exports", args=[s.scan.pk]), None),
        ("measurements", reverse("measurement-list"), None),
        ("measurement", reverse("measurement-detail", args=[s.measurement.pk]), None),
        ("time-course", reverse("subject-time-course", args=[s.subject.pk]), None),
        ("time-course-query", reverse("time-course") + f"?subject={s.subject.pk}", None),
        ("exports", reverse("export-list"), None),
        ("signatures", reverse("signatures"), None),
        ("audit-events", reverse("audit-event-list"), None),
    ]


def _keys(payload) -> set[str]:
    found = set()
    if isinstance(payload, dict):
        found |= set(payload)
        for value in payload.values():
            found |= _keys(value)
    elif isinstance(payload, list):
        for value in payload:
            found |= _keys(value)
    return found


@pytest.fixture
def sponsor_export(built, sponsor, trial, cohort):  # noqa: F811
    from compliance.services.exports import export_request

    # The sponsor also asked for the shared subject's de-identified DICOM study.
    export_request(actor=sponsor, kind=Export.Kind.DICOM_STUDY_DEIDENTIFIED, scan=cohort.shared.scan)
    _, content = built(sponsor, Export.Kind.SPONSOR_DEIDENTIFIED, trial)
    return {
        name: list(csv.DictReader(io.StringIO(text))) for name, text in unzip(content).items() if name.endswith(".csv")
    }


def test_it_gives_the_sponsor_no_identified_value_on_any_endpoint(
    api,
    sponsor,
    trial,
    cohort,  # noqa: F811
    sponsor_export,
):
    client = api(sponsor)
    hidden = [deidentify.subject_pseudonym(trial, r.subject) for r in cohort.hidden]
    for label, url, _ in _endpoints(cohort):
        response = client.get(url)
        assert response.status_code == 200, (label, response.status_code)
        payload = response.json()
        text = json.dumps(payload, ensure_ascii=False)
        assert _keys(payload) & IDENTIFIED_KEYS == set(), label
        for secret in secrets(cohort):
            assert secret not in text, (label, secret)
        for pseudonym in hidden:
            assert pseudonym not in text, (label, pseudonym)
        for record in cohort.hidden:  # not even by id
            rows = payload.get("results", payload) if isinstance(payload, dict) else payload
            rows = rows if isinstance(rows, list) else [rows]
            assert not [r for r in rows if isinstance(r, dict) and r.get("subject") == record.subject.pk], label


def test_it_gives_the_sponsor_the_export_s_pseudonyms_and_shifted_days(
    api,
    sponsor,
    trial,
    cohort,  # noqa: F811
    sponsor_export,
):
    client = api(sponsor)
    s = cohort.shared
    pseudonym = deidentify.subject_pseudonym(trial, s.subject)
    [exported_subject] = sponsor_export["subjects.csv"]
    [exported_consent] = sponsor_export["consents.csv"]
    [exported_injection] = sponsor_export["injections.csv"]
    assert exported_subject["pseudonym"] == pseudonym

    subject = client.get(reverse("subject-detail", args=[s.subject.pk])).json()
    assert subject["pseudonym"] == pseudonym
    assert subject["enrolment_date_shifted"] == exported_subject["enrolment_date_shifted"]
    assert subject["site_code"] == exported_subject["site"]
    assert subject["enrolment_date_shifted"] != s.subject.enrolment_date.isoformat()

    consent = client.get(reverse("consent-detail", args=[s.consent.pk])).json()
    assert (consent["pseudonym"], consent["signed_on_shifted"]) == (pseudonym, exported_consent["signed_on_shifted"])
    assert consent["withdrawn_scopes"] == ["longitudinal_imaging"] == exported_consent["withdrawn_scopes"].split()

    injection = client.get(reverse("injection-detail", args=[s.injection.pk])).json()
    assert injection["administered_on_shifted"] == exported_injection["administered_on_shifted"]
    assert injection["product_id"] == exported_injection["product_id"]
    # The planned duration (the basis of the live "% of the dose so far") travels with both.
    assert (injection["planned_duration_s"], exported_injection["planned_duration_s"]) == (None, "")
    batch = client.get(reverse("cell-batch-detail", args=[s.batch.pk])).json()
    assert (batch["product_id"], batch["donor_pseudonym"]) == (exported_injection["product_id"], pseudonym)

    scan = client.get(reverse("scan-detail", args=[s.scan.pk])).json()
    assert scan["pseudonym"] == pseudonym and scan["metrics"][0]["id"] == s.measurement.pk
    assert client.get(reverse("subject-time-course", args=[s.subject.pk])).json()["pseudonym"] == pseudonym
    [dicom_export] = client.get(reverse("scan-dicom-exports", args=[s.scan.pk])).json()
    assert dicom_export["scope"] == f"scan #{s.scan.pk} of subject {pseudonym}"
    lists = {name: client.get(reverse(name)).json() for name in ("subject-list", "scan-list", "injection-list")}
    assert [r["pseudonym"] for r in lists["subject-list"]["results"]] == [pseudonym]
    assert [r["id"] for r in lists["scan-list"]["results"]] == [s.scan.pk]
    assert [r["id"] for r in lists["injection-list"]["results"]] == [s.injection.pk]


def test_it_answers_404_for_subjects_without_data_sharing_consent(api, sponsor, cohort):  # noqa: F811
    client = api(sponsor)
    for record in cohort.hidden:
        for name, pk in [
            ("subject-detail", record.subject.pk),
            ("consent-detail", record.consent.pk),
            ("injection-detail", record.injection.pk),
            ("cell-batch-detail", record.batch.pk),
            ("scan-detail", record.scan.pk),
            ("scan-metrics", record.scan.pk),
            ("scan-dicom-exports", record.scan.pk),
            ("measurement-detail", record.measurement.pk),
            ("subject-time-course", record.subject.pk),
        ]:
            response = client.get(reverse(name, args=[pk]))
            assert response.status_code == 404, (name, response.status_code)
            assert response.json()["error"]["code"] == "not_found"
        response = client.get(reverse("time-course"), {"subject": record.subject.pk})
        assert response.status_code == 404


def test_it_refuses_the_sponsor_signatures_and_the_audit_trail(api, sponsor, cohort):  # noqa: F811
    client = api(sponsor)
    s = cohort.shared
    response = client.get(reverse("signatures"), {"object_type": "trials.subject", "object_id": s.subject.pk})
    assert response.status_code == 404
    assert client.get(reverse("signatures")).json() == []
    assert client.get(reverse("audit-event-list")).json()["count"] == 0


def test_it_leaves_the_monitor_s_and_the_coordinator_s_views_identified(api, monitor, coordinator_a, cohort):  # noqa: F811
    everyone = {r.subject.code for r in cohort.everyone}
    subjects = api(monitor).get(reverse("subject-list")).json()["results"]
    assert {r["code"] for r in subjects} == everyone
    consent = api(monitor).get(reverse("consent-detail", args=[cohort.withdrawn.consent.pk])).json()
    assert consent["withdrawal_reason"] == REASONS[1] and consent["subject_code"] == cohort.withdrawn.subject.code
    batch = api(coordinator_a).get(reverse("cell-batch-detail", args=[cohort.private.batch.pk])).json()
    assert batch["chain_of_identity_id"] == cohort.private.batch.chain_of_identity_id
    injection = api(coordinator_a).get(reverse("injection-detail", args=[cohort.shared.injection.pk])).json()
    assert injection["administered_at"].startswith(cohort.shared.injection.administered_at.date().isoformat())
    scan = api(monitor).get(reverse("scan-detail", args=[cohort.private.scan.pk])).json()
    assert scan["subject_code"] == cohort.private.subject.code and scan["filename"] == cohort.private.scan.filename
    course = api(monitor).get(reverse("subject-time-course", args=[cohort.private.subject.pk])).json()
    assert course["subject_code"] == cohort.private.subject.code


def test_it_includes_exactly_the_subjects_whose_data_sharing_consent_is_in_force(cohort):  # noqa: F811
    from trials.selectors import subjects_sharing_data

    sharing = set(subjects_sharing_data().values_list("id", flat=True))
    for record in cohort.everyone:
        assert (record.subject.pk in sharing) == consent_allows(record.subject, "data_sharing")
    assert sharing == {cohort.shared.subject.pk}
    assert real_dates(cohort.shared)  # the cohort's dates are what the leak checks look for


@pytest.mark.parametrize(
    "route,params,field",
    [
        ("subject-list", {"code": "MPI-CT-T01-A-01"}, "code"),
        ("subject-list", {"site_code": "A"}, "site_code"),
        ("site-list", {"code": "A"}, "code"),
        ("injection-list", {"administered_after": "2019-05-01T00:00:00Z"}, "administered_after"),
        ("injection-list", {"administered_before": "2019-05-20T00:00:00Z"}, "administered_before"),
        ("subject-list", {"ordering": "-enrolment_date"}, "ordering"),
        ("consent-list", {"ordering": "signed_at"}, "ordering"),
        ("cell-batch-list", {"ordering": "batch_code"}, "ordering"),
        ("scan-list", {"ordering": "created_at"}, "ordering"),
    ],
)
def test_it_refuses_the_sponsor_filters_and_orderings_on_identified_values(
    api,
    sponsor,
    monitor,
    cohort,  # noqa: F811
    route,
    params,
    field,
):
    # Filtering by a real code or date (or ordering by one) would tell the sponsor its value.
    response = api(sponsor).get(reverse(route), params)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "not_filterable" and error["fields"] == {field: [error["message"]]}
    assert api(monitor).get(reverse(route), params).status_code == 200  # others filter as before
