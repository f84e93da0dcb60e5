"""Every browser page, walked as the sponsor: 404, or (the dashboard and the exports page)
de-identified content only. Other roles' pages are unchanged."""

from __future__ import annotations

import pytest
from django.urls import URLResolver, get_resolver, reverse

from compliance.models import Export
from compliance.services.exports import export_request
from live.models import LiveSession
from tests.compliance.sponsor_cohort import cohort, secrets  # noqa: F401 - fixture
from trials import deidentify

# The pages a sponsor gets (web/urls.py SPONSOR_PAGES); every other one is a 404.
SPONSOR_PAGES = {"dashboard", "exports", "export-retry"}


def _page_patterns():
    """(namespaced url name, route parameters) of every page of web and compliance."""
    found = []
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace in ("web", "compliance"):
            for pattern in entry.url_patterns:
                found.append((f"{entry.namespace}:{pattern.name}", set(pattern.pattern.converters)))
    return found


PAGES = _page_patterns()


def _live_session(record) -> LiveSession:
    """A live session of the record's injection (a sponsor sees nothing live)."""
    session, _ = LiveSession.objects.get_or_create(
        injection=record.injection,
        defaults={
            "subject": record.subject,
            "scanner": record.scan.scanner,
            "created_by": record.injection.administered_by,
        },
    )
    return session


def _url(name, params, record, *, export=None) -> str:
    page = name.split(":")[1]
    if not params:
        return reverse(name)
    if page == "export-retry":
        return reverse(name, kwargs={"pk": export.pk})
    pk = {
        "injection-correct": record.injection.pk,
        "consent-correct": record.consent.pk,
        "consent-withdraw": record.consent.pk,
        "calibration-retire": record.measurement.reconstruction.system_matrix_id,
        "live-start": record.injection.pk,
    }.get(page)
    if page in ("live", "live-token"):
        pk = _live_session(record).pk
    if pk is None:
        pk = (
            record.subject.pk
            if page == "subject" or page.startswith(("subject-", "consent-", "injection-", "scan-upload", "roi-"))
            else record.batch.nanoparticle_lot_id
            if page.startswith("lot-")
            else record.batch.pk
            if page.startswith("batch-")
            else record.scan.pk
            if page == "scan" or page.startswith("scan-")
            else None
        )
    assert pk is not None, f"no object for {name}: add it here"
    kwargs = {"pk": pk}
    if "plane" in params:
        kwargs.update(plane="axial", index=0)
    return reverse(name, kwargs=kwargs)


def test_it_walks_every_page(cohort):  # noqa: F811
    names = {name for name, _ in PAGES}
    assert {"web:dashboard", "web:exports", "web:subject", "web:scans", "compliance:audit-browser"} <= names
    assert {f"web:{p}" for p in SPONSOR_PAGES} <= names
    from web.urls import SPONSOR_PAGES as configured

    assert configured == SPONSOR_PAGES


@pytest.mark.parametrize("name,params", PAGES, ids=[p[0] for p in PAGES])
def test_it_answers_the_sponsor_404_or_deidentified_content(
    browser_client,
    sponsor,
    trial,
    cohort,  # noqa: F811
    name,
    params,
):
    export = export_request(actor=sponsor, kind=Export.Kind.DICOM_STUDY_DEIDENTIFIED, scan=cohort.shared.scan)
    client = browser_client(sponsor)
    for record in cohort.everyone:
        url = _url(name, params, record, export=export)
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            if name.split(":")[1] in SPONSOR_PAGES and name.startswith("web:"):
                assert response.status_code in (200, 302, 400, 405), (name, method, response.status_code)
                content = response.content.decode()
                for secret in secrets(cohort):
                    assert secret not in content, (name, method, secret)
                for hidden in cohort.hidden:
                    assert deidentify.subject_pseudonym(trial, hidden.subject) not in content
            else:
                assert response.status_code == 404, (name, method, response.status_code)


def test_it_shows_the_sponsor_counts_and_pseudonymous_exports_only(browser_client, sponsor, trial, cohort):  # noqa: F811
    export_request(actor=sponsor, kind=Export.Kind.DICOM_STUDY_DEIDENTIFIED, scan=cohort.shared.scan)
    client = browser_client(sponsor)
    pseudonym = deidentify.subject_pseudonym(trial, cohort.shared.subject)
    exports = client.get(reverse("web:exports")).content.decode()
    assert f"scan #{cohort.shared.scan.pk} of subject {pseudonym}" in exports
    assert deidentify.opaque_id(trial, "SITE", "A") in exports  # the site choice, by opaque code
    dashboard = client.get(reverse("web:dashboard"))
    assert dashboard.status_code == 200 and "de-identified" in dashboard.content.decode()
    assert dashboard.context["totals"]["subjects"] == 1  # only the subject sharing data


def test_it_leaves_other_roles_pages_unchanged(browser_client, monitor, coordinator_a, cohort):  # noqa: F811
    client = browser_client(monitor)
    for record in cohort.everyone:
        page = client.get(reverse("web:subject", args=[record.subject.pk]))
        assert page.status_code == 200 and record.subject.code in page.content.decode()
    assert client.get(reverse("compliance:audit-browser")).status_code == 200
    dashboard = client.get(reverse("web:dashboard"))
    assert dashboard.context["totals"]["subjects"] == 3
    products = browser_client(coordinator_a).get(reverse("web:products")).content.decode()
    assert cohort.private.batch.chain_of_identity_id in products
