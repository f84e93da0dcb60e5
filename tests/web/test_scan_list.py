"""The scans list: filters by the lifecycle words, site, subject code and time point,
pages, links to the viewer, and costs the same queries for 2 rows as for 20."""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.test.utils import CaptureQueriesContext

from imaging.models import Scan
from tests.web.scans import scans_at


def _count(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_it_lists_scans_with_badges_and_viewer_links(browser_client, coordinator_a, site_a):
    quantified, failed = scans_at(site_a, 1)[0], scans_at(site_a, 1, status="failed", retryable=True)[0]
    html = browser_client(coordinator_a).get("/scans/").content.decode()
    assert f'href="/scans/{quantified.pk}/"' in html and f'href="/scans/{failed.pk}/"' in html
    assert 'data-status="quantified"' in html and 'data-status="failed"' in html
    assert "61.5 %" in html and "retryable" in html
    # The status filter offers exactly the lifecycle words.
    assert all(f'<option value="{s}">{s}</option>' in html for s in Scan.Status.values)


def test_it_filters_by_status_site_subject_and_time_point(browser_client, coordinator_a, monitor, site_a, site_b):
    early = scans_at(site_a, 1, hours=2)[0]
    late = scans_at(site_a, 1, hours=48, status="reconstructing")[0]
    other_site = scans_at(site_b, 1, hours=48)[0]
    client = browser_client(monitor)

    def shown(query):
        return {s.pk for s in client.get(f"/scans/?{query}").context["page"]}

    assert shown("") == {early.pk, late.pk, other_site.pk}
    assert shown("status=reconstructing") == {late.pk}
    assert shown(f"site={site_b.pk}") == {other_site.pk}
    assert shown(f"q={early.subject.code[-6:]}") == {early.pk}
    assert shown("hours=48") == {late.pk, other_site.pk}
    assert shown("status=nonsense&hours=x") == {early.pk, late.pk, other_site.pk}


def test_it_pages_the_list(browser_client, coordinator_a, site_a):
    scans_at(site_a, 23)
    client = browser_client(coordinator_a)
    first = client.get("/scans/?status=quantified")
    assert len(first.context["page"]) == 20 and 'rel="next"' in first.content.decode()
    second = client.get("/scans/?status=quantified&page=2")
    assert len(second.context["page"]) == 3 and "page 2 of 2" in second.content.decode()


def test_it_hides_other_sites_scans(browser_client, coordinator_b, site_a):
    scan = scans_at(site_a, 1)[0]
    response = browser_client(coordinator_b).get("/scans/")
    assert list(response.context["page"]) == [] and scan.subject.code.encode() not in response.content


def test_it_uses_as_many_queries_for_20_scans_as_for_2(browser_client, coordinator_a, site_a):
    client = browser_client(coordinator_a)
    scans_at(site_a, 2)
    few = _count(client, "/scans/")
    scans_at(site_a, 18, hours=6)
    assert _count(client, "/scans/") == few


def test_the_scan_list_and_the_upload_history_show_the_upload_time_on_each_sites_clock(
    browser_client, monitor, imaging_a, site_a, site_b
):
    """Issue #18: Berlin's scan in CET/CEST, Boston's in EST/EDT, each naming its zone,
    UTC beside it; both pages render the one scan table."""
    berlin, boston = scans_at(site_a, 1)[0], scans_at(site_b, 1)[0]
    at = dt.datetime(2026, 1, 15, 9, 5, tzinfo=dt.UTC)
    Scan.objects.filter(pk__in=[berlin.pk, boston.pk]).update(created_at=at)
    for page in ("/scans/", "/uploads/"):
        html = browser_client(monitor).get(page).content.decode()
        assert "Uploaded (site&#x27;s clock)" in html or "Uploaded (site's clock)" in html
        assert '<time datetime="2026-01-15T09:05:00Z" title="2026-01-15 09:05 UTC">2026-01-15 10:05 CET</time>' in html
        assert '<time datetime="2026-01-15T09:05:00Z" title="2026-01-15 09:05 UTC">2026-01-15 04:05 EST</time>' in html
        assert "(09:05 UTC)" in html
