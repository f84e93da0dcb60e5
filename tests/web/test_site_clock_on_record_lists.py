"""Issue #18, times: the audit browser, the correction history, the awaiting-signature
list, the calibrations and the exports show a site's row on that site's clock, its zone
named, with UTC beside it and in full on hover; a row of no site's (a trial-wide export,
a trial's lot, the operations page's workers and leases) in UTC, labelled."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal

from django.urls import reverse

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Export
from imaging.models import SystemMatrix
from ops.models import WorkerHeartbeat
from tests import factories as f
from tests.imaging.factories import SystemMatrixFactory
from tests.web.scans import scanner_at
from trials.services.lots import lot_correct
from trials.services.subjects import subject_change_status

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
BOSTON = zoneinfo.ZoneInfo("America/New_York")


def _on_site_clock(when: dt.datetime, zone, fmt: str = "%H:%M") -> str:
    """What ``at_site`` / ``seconds_at_site`` print for a site's row."""
    utc, local = when.astimezone(dt.UTC), when.astimezone(zone)
    return (
        f'<time datetime="{utc.isoformat().replace("+00:00", "Z")}" title="{utc:%Y-%m-%d {fmt}} UTC">'
        f'{local:%Y-%m-%d {fmt}} {local.tzname()}</time> <span class="muted small">({utc:{fmt}} UTC)</span>'
    )


def _in_utc(when: dt.datetime, fmt: str = "%H:%M:%S") -> str:
    """What the filters print for a row of no site's."""
    utc = when.astimezone(dt.UTC)
    return f'<time datetime="{utc.isoformat().replace("+00:00", "Z")}">{utc:%Y-%m-%d {fmt}} UTC</time>'


def test_the_audit_browser_shows_a_sites_event_on_its_clock_and_a_trials_in_utc(
    browser_client, auditor, coordinator_b, trial_manager, site_b, trial
):
    subject = f.SubjectFactory(site=site_b, code="B-0007")
    subject_change_status(actor=coordinator_b, subject=subject, status="completed", reason="visit 4 done", confirm=True)
    lot = f.NanoparticleLotFactory(trial=trial)
    lot_correct(actor=trial_manager, lot=lot, reason="Certificate says 28.0 mg/mL", iron_mg_per_ml=Decimal("28.0"))
    at_site = AuditEvent.objects.get(action=AuditAction.SUBJECT_STATUS_CHANGED)
    trial_wide = AuditEvent.objects.filter(object_type="trials.nanoparticlelot").latest("sequence")
    assert at_site.site_id == site_b.pk and trial_wide.site_id is None

    html = browser_client(auditor).get("/compliance/audit/").content.decode()
    assert "<th>When</th>" in html and "When (UTC)" not in html
    assert _on_site_clock(at_site.occurred_at, BOSTON, "%H:%M:%S") in html
    assert _in_utc(trial_wide.occurred_at) in html


def test_the_correction_history_shows_when_on_the_sites_clock(browser_client, coordinator_a, site_a):
    subject = f.SubjectFactory(site=site_a, code="A-0031")
    subject_change_status(actor=coordinator_a, subject=subject, status="completed", reason="visit 4 done", confirm=True)
    event = AuditEvent.objects.get(action=AuditAction.SUBJECT_STATUS_CHANGED)

    html = browser_client(coordinator_a).get(reverse("web:subject", args=[subject.pk])).content.decode()
    history = html.split('id="h-corrections"')[1]
    assert '<th scope="col">When</th>' in history and "When (UTC)" not in history
    assert _on_site_clock(event.occurred_at, BERLIN, "%H:%M:%S") in history


def test_a_lots_correction_history_is_in_utc(browser_client, trial_manager, trial):
    lot = f.NanoparticleLotFactory(trial=trial)
    lot_correct(actor=trial_manager, lot=lot, reason="Certificate says 28.0 mg/mL", iron_mg_per_ml=Decimal("28.0"))
    event = AuditEvent.objects.filter(object_type="trials.nanoparticlelot").latest("sequence")
    html = browser_client(trial_manager).get(f"/lots/{lot.pk}/edit/").content.decode()
    assert _in_utc(event.occurred_at) in html.split('id="h-corrections"')[1]


def test_the_awaiting_signature_list_is_on_the_sites_clock(browser_client, investigator_a, site_a):
    subject = f.SubjectFactory(site=site_a, code="A-0032")
    injection = f.InjectionFactory(subject=subject)
    html = browser_client(investigator_a).get(reverse("web:awaiting-signature")).content.decode()
    assert '<th scope="col">Due since</th>' in html and "(UTC)</th>" not in html
    assert _on_site_clock(injection.administered_at, BERLIN) in html


def test_the_calibrations_page_shows_when_registered_on_the_scanners_sites_clock(browser_client, imaging_a, site_a):
    sm = SystemMatrixFactory(scanner=scanner_at(site_a))
    created = SystemMatrix.objects.get(pk=sm.pk).created_at
    html = browser_client(imaging_a).get(reverse("web:calibrations")).content.decode()
    row = html.split(f'id="calibration-{sm.pk}"')[1].split("</tr>")[0]
    assert _on_site_clock(created, BERLIN) in row


def test_the_exports_page_shows_a_sites_export_on_its_clock_and_a_trials_in_utc(browser_client, monitor, site_b, trial):
    of_site = Export.objects.create(kind=Export.Kind.ODM_XML, trial=trial, site=site_b, requested_by=monitor)
    of_trial = Export.objects.create(kind=Export.Kind.AUDIT_JSON, trial=trial, requested_by=monitor)
    html = browser_client(monitor).get(reverse("web:exports")).content.decode()
    assert "<th>Requested</th>" in html and "Requested (UTC)" not in html
    assert _on_site_clock(of_site.created_at, BOSTON) in html
    assert _in_utc(of_trial.created_at, "%H:%M") in html


def test_the_operations_page_labels_every_time_utc(browser_client, site_a):
    admin = f.UserFactory(username="root", is_staff=True, is_superuser=True)
    started = dt.datetime(2026, 7, 1, 8, 0, 5, tzinfo=dt.UTC)
    WorkerHeartbeat.objects.create(
        node="celery@recon-1", queues=["recon"], pid=41, started_at=started, beat_at=started + dt.timedelta(minutes=1)
    )
    html = browser_client(admin).get("/operations/").content.decode()
    assert "<th>Started</th><th>Last beat</th>" in html
    assert '<time datetime="2026-07-01T08:00:05Z">2026-07-01 08:00:05 UTC</time>' in html
    assert '<time datetime="2026-07-01T08:01:05Z">2026-07-01 08:01:05 UTC</time>' in html
    assert "CEST" not in html and "CET<" not in html  # no site's clock: the platform's machines


def test_a_sponsor_sees_even_a_sites_export_in_utc(browser_client, sponsor, site_b, trial):
    """A sponsor knows sites by key only: the site's zone would name it."""
    of_site = Export.objects.create(
        kind=Export.Kind.SPONSOR_DEIDENTIFIED, trial=trial, site=site_b, requested_by=sponsor
    )
    html = browser_client(sponsor).get(reverse("web:exports")).content.decode()
    assert _in_utc(of_site.created_at, "%H:%M") in html
    assert " EST<" not in html and " EDT<" not in html
