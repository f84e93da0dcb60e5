"""In a Berlin browser, issue #18: the status grid follows the upload's consent rule (a
subject who missed 0 h and withdrew follow-up imaging may still have any time point as
the first scan: overdue, not withdrawn); a subject with no consent on file is never
overdue ("no consent on file"); the audit browser and the correction history show a site's
event on the site's clock, its zone named, UTC beside it. axe-core finds no violation."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests import factories as f
from tests.e2e.test_accessibility import axe
from trials.models import SubjectStatus
from trials.services.consent import consent_withdraw
from trials.services.subjects import subject_change_status

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def _injected(site, code, hours_ago):
    subject = f.SubjectFactory(site=site, code=code, status=SubjectStatus.ENROLLED)
    f.InjectionFactory(
        subject=subject,
        batch=f.CellBatchFactory(donor_subject=subject),
        administered_at=timezone.now() - dt.timedelta(hours=hours_ago),
    )
    return subject


def test_the_grid_follows_the_upload_rule_and_never_calls_no_consent_overdue(browse, site_a, coordinator_a):
    missed = _injected(site_a, "A-0051", 40.0)
    consent = f.ConsentFactory(subject=missed)
    consent_withdraw(
        actor=coordinator_a, consent=consent, scopes=["longitudinal_imaging"], reason="Declined follow-up scans"
    )
    unconsented = _injected(site_a, "A-0052", 80.0)
    s = browse(coordinator_a, timezone_id="Europe/Berlin")
    page = s.page
    s.go("/records/status/")

    cells = page.get_by_role("row").filter(has_text=missed.code).locator("td.grid-cell")
    assert [cells.nth(k).get_attribute("class").split("state-")[1] for k in range(5)] == [
        "done",
        "overdue",
        "overdue",
        "expected",
        "expected",
    ]
    cells = page.get_by_role("row").filter(has_text=unconsented.code).locator("td.grid-cell")
    for k in range(1, 5):
        text = cells.nth(k).inner_text()
        assert "no consent on file" in text and "overdue" not in text
    assert axe(page) == []
    s.shot("entry-14-status-grid-one-consent-rule")


def test_the_audit_browser_and_correction_history_are_on_the_sites_clock(browse, site_a, coordinator_a, auditor):
    subject = f.SubjectFactory(site=site_a, code="A-0053", status=SubjectStatus.ENROLLED)
    subject_change_status(actor=coordinator_a, subject=subject, status="completed", reason="visit 4 done", confirm=True)
    event = AuditEvent.objects.get(action=AuditAction.SUBJECT_STATUS_CHANGED)
    local, utc = event.occurred_at.astimezone(BERLIN), event.occurred_at.astimezone(dt.UTC)
    shown = f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} ({utc:%H:%M:%S} UTC)"
    instant = utc.isoformat().replace("+00:00", "Z")

    s = browse(auditor, timezone_id="Europe/Berlin")
    s.go("/compliance/audit/?action=SUBJECT_STATUS_CHANGED")
    row = s.page.locator("table.audit > tbody > tr").filter(has_text="visit 4 done")
    assert shown in row.inner_text()
    assert row.locator(f'time[datetime="{instant}"]').get_attribute("title") == f"{utc:%Y-%m-%d %H:%M:%S} UTC"
    assert axe(s.page) == []
    s.shot("entry-15-audit-browser-site-clock")

    s = browse(coordinator_a, timezone_id="Europe/Berlin")
    s.go(f"/subjects/{subject.pk}/")
    history = s.page.locator("table.history-table")
    assert shown in history.inner_text()
    assert axe(s.page) == []
    s.shot("entry-16-correction-history-site-clock")
