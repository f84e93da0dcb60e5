"""The status grid (issue #18): a time point the subject's consent no longer covers is not
expected ("withdrawn", with the date on the site's clock) and never overdue (which scopes a
time point needs: trials.schedule.consent_scopes_for_scan, the upload's rule); every time
on the grid is on the site's clock, its zone named."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from django.utils import timezone

from imaging.models import ScanStatus
from tests import factories as f
from tests.web.test_record_pages import _scan
from trials.models import SubjectStatus
from trials.services.consent import consent_withdraw
from web import records_queries

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
REASON = "Subject declined follow-up scans at visit 3"


def _subject(site, code, *, injected_hours_ago=80.0, scans=(0.0,)):
    subject = f.SubjectFactory(site=site, code=code, status=SubjectStatus.ENROLLED)
    consent = f.ConsentFactory(subject=subject)
    injection = f.InjectionFactory(
        subject=subject,
        batch=f.CellBatchFactory(donor_subject=subject),
        administered_at=timezone.now() - dt.timedelta(hours=injected_hours_ago),
    )
    for index, hours in enumerate(scans):
        _scan(subject, injection, hours, sha="abcdef"[index])
    return subject, consent, injection


def _states(grid, subject):
    row = next(r for r in grid["rows"] if r.subject.pk == subject.pk)
    return [cell.state for cell in row.cells], row.cells


def test_follow_ups_after_a_longitudinal_withdrawal_are_withdrawn_with_the_date_never_overdue(site_a, coordinator_a):
    subject, consent, _ = _subject(site_a, "A-0003")
    withdrawn_at = timezone.now() - dt.timedelta(hours=60)  # before the 24 h window closed
    consent_withdraw(
        actor=coordinator_a, consent=consent, scopes=["longitudinal_imaging"], reason=REASON, withdrawn_at=withdrawn_at
    )
    grid = records_queries.status_grid(coordinator_a)
    states, cells = _states(grid, subject)
    assert states == ["done", "done", "withdrawn", "withdrawn", "withdrawn"]
    local = withdrawn_at.astimezone(BERLIN)
    for cell in cells[2:]:
        assert cell.detail == f"follow-up imaging consent withdrawn {local:%Y-%m-%d %H:%M} {local.tzname()}"
        assert cell.word == "not expected: consent withdrawn"
    assert grid["counts"]["overdue"] == 0 and grid["counts"]["expected"] == 0 and grid["counts"]["withdrawn"] == 3


def test_an_imaging_withdrawal_ends_every_time_point_not_yet_done(site_b, coordinator_b):
    subject, consent, _ = _subject(site_b, "B-0004", injected_hours_ago=40.0)
    consent_withdraw(actor=coordinator_b, consent=consent, scopes=["imaging"], reason="Subject withdrew imaging")
    states, cells = _states(records_queries.status_grid(coordinator_b), subject)
    assert states == ["done", "done", "withdrawn", "withdrawn", "withdrawn"]
    assert cells[2].detail.startswith("imaging consent withdrawn ")
    assert cells[2].detail[-3:] in ("EST", "EDT")  # site B's clock, Boston


def test_a_follow_up_withdrawal_before_any_scan_leaves_every_time_point_open_for_the_first_scan(site_a, coordinator_a):
    """The demo's A-0003: withdrew follow-up imaging before the first scan. The first scan
    of the injection needs imaging only, whichever time point it is (the upload's rule:
    trials.schedule.consent_scopes_for_scan); once it is on file, the later ones are
    follow-ups."""
    subject, consent, injection = _subject(site_a, "A-0005", injected_hours_ago=2.0, scans=())
    consent_withdraw(actor=coordinator_a, consent=consent, scopes=["longitudinal_imaging"], reason=REASON)
    states, _ = _states(records_queries.status_grid(coordinator_a), subject)
    assert states == ["done", "expected", "expected", "expected", "expected"]
    _scan(subject, injection, 0.0)
    states, _ = _states(records_queries.status_grid(coordinator_a), subject)
    assert states == ["done", "done", "withdrawn", "withdrawn", "withdrawn"]


def test_a_subject_not_yet_injected_shows_the_withdrawal_too(site_a, coordinator_a):
    subject = f.SubjectFactory(site=site_a, code="A-0008", status=SubjectStatus.ENROLLED)
    consent = f.ConsentFactory(subject=subject)
    consent_withdraw(actor=coordinator_a, consent=consent, scopes=["imaging"], reason="Subject withdrew imaging")
    states, cells = _states(records_queries.status_grid(coordinator_a), subject)
    assert states == ["expected", "withdrawn", "withdrawn", "withdrawn", "withdrawn"]
    assert cells[0].detail == "not injected yet" and cells[1].detail.startswith("imaging consent withdrawn ")


def test_follow_ups_never_consented_to_are_not_expected(site_a, coordinator_a):
    """The demo's A-0004: consented to imaging, not to follow-up imaging."""
    subject = f.SubjectFactory(site=site_a, code="A-0009", status=SubjectStatus.ENROLLED)
    f.ConsentFactory(subject=subject, scope_longitudinal_imaging=False)
    injection = f.InjectionFactory(
        subject=subject,
        batch=f.CellBatchFactory(donor_subject=subject),
        administered_at=timezone.now() - dt.timedelta(hours=80),
    )
    _scan(subject, injection, 0.0)
    grid = records_queries.status_grid(coordinator_a)
    states, cells = _states(grid, subject)
    assert states == ["done", "done", "not-consented", "not-consented", "not-consented"]
    assert cells[2].detail == "no follow-up imaging consent" and cells[2].word == "not expected: not consented"
    assert grid["counts"]["overdue"] == 0


def test_a_withdrawal_after_now_does_not_count_yet(site_a, coordinator_a):
    subject, consent, _ = _subject(site_a, "A-0006", injected_hours_ago=40.0)
    consent_withdraw(actor=coordinator_a, consent=consent, scopes=["longitudinal_imaging"], reason=REASON)
    earlier = timezone.now() - dt.timedelta(hours=1)
    states, _ = _states(records_queries.status_grid(coordinator_a, now=earlier), subject)
    assert states == ["done", "done", "overdue", "expected", "expected"]


def test_time_points_missed_stay_overdue_after_a_follow_up_withdrawal_while_no_scan_is_on_file(site_a, coordinator_a):
    subject, consent, injection = _subject(site_a, "A-0007", injected_hours_ago=40.0, scans=())
    _scan(subject, injection, 0.0, status=ScanStatus.REJECTED)
    consent_withdraw(actor=coordinator_a, consent=consent, scopes=["longitudinal_imaging"], reason=REASON)
    states, _ = _states(records_queries.status_grid(coordinator_a), subject)
    # A rejected scan is none: any time point may still be the first scan, needing imaging only.
    assert states == ["done", "overdue", "overdue", "expected", "expected"]


def test_the_grid_page_shows_times_on_the_sites_clock(site_a, browser_client, coordinator_a):
    subject, consent, injection = _subject(site_a, "A-0003", injected_hours_ago=40.0)
    consent_withdraw(actor=coordinator_a, consent=consent, scopes=["longitudinal_imaging"], reason=REASON)
    html = browser_client(coordinator_a).get("/records/status/").content.decode()
    given = injection.administered_at.astimezone(BERLIN)
    assert f"{given:%Y-%m-%d %H:%M} {given.tzname()}" in html
    assert "follow-up imaging consent withdrawn" in html and "not expected: consent withdrawn" in html
    assert " UTC</span>" not in html.split("<table")[1]  # no time left in UTC on the grid
