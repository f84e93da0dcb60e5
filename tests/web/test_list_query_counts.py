"""No page makes a number of queries that grows with the rows it shows."""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from compliance.services.exports import export_request
from tests import factories as f


def _rows(site, coordinator, n):
    for i in range(n):
        subject = f.SubjectFactory(site=site)
        consent = f.ConsentFactory(subject=subject, obtained_by=coordinator)
        if i % 2:
            consent.withdrawn_at = timezone.now()
            consent.withdrawn_scopes = {"data_sharing": timezone.now().isoformat()}
            consent.withdrawal_reason = "moved"
            consent.save()
        batch = f.CellBatchFactory(donor_subject=subject)
        batch.nanoparticle_lot.expiry_date = timezone.localdate() + dt.timedelta(days=5)
        batch.nanoparticle_lot.save()
        f.InjectionFactory(batch=batch, subject=subject)


def _count(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_it_uses_as_many_queries_for_20_rows_as_for_2(browser_client, coordinator_a, auditor, site_a, trial):
    client = browser_client(coordinator_a)
    urls = ["/", "/subjects/", "/products/"]
    _rows(site_a, coordinator_a, 2)
    few = {url: _count(client, url) for url in urls}
    _rows(site_a, coordinator_a, 18)
    many = {url: _count(client, url) for url in urls}
    assert many == few


def test_the_exports_page_uses_as_many_queries_for_20_exports_as_for_2(
    browser_client, auditor, trial, site_a, django_capture_on_commit_callbacks
):
    client = browser_client(auditor)

    def request(n):
        for _ in range(n):
            export_request(actor=auditor, kind="report_csv", trial=trial, site=site_a)

    request(2)
    few = _count(client, "/exports/")
    request(18)
    assert _count(client, "/exports/") == few
