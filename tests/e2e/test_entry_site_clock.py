"""In a Berlin browser (site A's zone), issue #18: the hour repeated when summer time ends
is entered by choosing its occurrence, offered next to the field only for such a time,
and stored as the instant chosen; the hour skipped when it begins is refused in words
next to the field, nothing written. The status grid shows a subject who withdrew
follow-up imaging as not expected (withdrawn, with the date), times on the site's clock.
axe-core finds no violation on these pages, the error pages included."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.utils import timezone

from tests import factories as f
from tests.e2e.test_accessibility import axe
from tests.web.test_record_pages import _scan
from trials.models import Consent, SubjectStatus
from trials.services.consent import consent_withdraw

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def _consent_form(browse, coordinator, subject):
    s = browse(coordinator, timezone_id="Europe/Berlin")
    s.go(f"/subjects/{subject.pk}/consent/")
    return s, s.page


def test_the_repeated_hour_is_entered_by_choosing_its_occurrence(browse, ready, coordinator_a):
    subject, first_consent, _batch = ready
    s, page = _consent_form(browse, coordinator_a, subject)
    choice = page.get_by_role("group", name="2026-10-25 02:30 happened twice on the site's clock: which one?")
    assert choice.count() == 0  # offered only for a time the clock showed twice
    page.get_by_label("Signed at").fill("2026-10-25T02:30")
    page.get_by_role("button", name="Save").click()
    error = page.locator("#id_signed_at_error")
    error.wait_for()
    assert "happened twice in Berlin" in error.inner_text() and "Choose which" in error.inner_text()
    assert choice.is_visible()
    assert Consent.objects.count() == 1  # nothing written yet
    assert axe(page) == []
    s.shot("entry-10-repeated-hour-choice")

    choice.get_by_label("the second, 02:30 CET (01:30 UTC), after the clocks went back").check()
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/subjects/{subject.pk}/")
    stored = Consent.objects.exclude(pk=first_consent.pk).get().signed_at
    assert stored == dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC)
    shown = page.locator('time[datetime="2026-10-25T01:30:00Z"]').first
    assert shown.inner_text() == "2026-10-25 02:30 CET"
    s.shot("entry-11-repeated-hour-stored")


def test_the_skipped_hour_is_refused_next_to_the_field(browse, ready, coordinator_a):
    subject, _consent, _batch = ready
    s, page = _consent_form(browse, coordinator_a, subject)
    page.get_by_label("Signed at").fill("2026-03-29T02:30")
    page.get_by_role("button", name="Save").click()
    error = page.locator("#id_signed_at_error")
    error.wait_for()
    assert "2026-03-29 02:30 does not exist in Berlin" in error.inner_text()
    assert "03:30 CEST" in error.inner_text()
    assert page.locator("fieldset.occurrence").count() == 0
    # The words sit with the field they are about.
    assert page.locator(".field.has-error").filter(has=page.get_by_label("Signed at")).count() == 1
    assert Consent.objects.count() == 1
    assert axe(page) == []
    s.shot("entry-12-skipped-hour-refused")


def test_the_status_grid_shows_a_follow_up_withdrawal_as_not_expected(browse, site_a, coordinator_a):
    subject = f.SubjectFactory(site=site_a, code="MPI-CT-T01-A-0003", status=SubjectStatus.ENROLLED)
    consent = f.ConsentFactory(subject=subject)
    injection = f.InjectionFactory(
        subject=subject,
        batch=f.CellBatchFactory(donor_subject=subject),
        administered_at=timezone.now() - dt.timedelta(hours=80),
    )
    _scan(subject, injection, 0.0)
    withdrawn_at = timezone.now() - dt.timedelta(hours=70)
    consent_withdraw(
        actor=coordinator_a,
        consent=consent,
        scopes=["longitudinal_imaging"],
        reason="Subject declined follow-up scans at visit 3",
        withdrawn_at=withdrawn_at,
    )
    s = browse(coordinator_a, timezone_id="Europe/Berlin")
    page = s.page
    s.go("/records/status/")
    row = page.get_by_role("row").filter(has_text="MPI-CT-T01-A-0003")
    cells = row.locator("td.grid-cell")
    assert cells.count() == 5
    local = withdrawn_at.astimezone(BERLIN)
    for k in (2, 3, 4):
        text = cells.nth(k).inner_text()
        assert "not expected: consent withdrawn" in text and "overdue" not in text
        assert f"follow-up imaging consent withdrawn {local:%Y-%m-%d %H:%M} {local.tzname()}" in text
    given = injection.administered_at.astimezone(BERLIN)
    assert f"{given:%Y-%m-%d %H:%M} {given.tzname()}" in cells.nth(0).inner_text()
    assert row.locator("td.state-overdue").count() == 0
    assert axe(page) == []
    s.shot("entry-13-status-grid-withdrawn")
