"""Three subjects for the sponsor's-view tests, each with consent, an autologous batch,
an injection and a quantified scan with a measurement:

    shared     site A, data-sharing consent in force (a partial withdrawal of another
               scope, with a free-text reason)
    withdrawn  site B, data sharing granted, then withdrawn (with a reason)
    private    site A, consent without data sharing

Real dates sit in one 30-day window and every subject's date shift is more than 60 days,
so no shifted date can equal a real one: a real date found in a response is a leak.
"""

from __future__ import annotations

import datetime as dt
import itertools
from types import SimpleNamespace

import pytest

from tests import factories as f
from tests.imaging import factories as fi
from trials import deidentify

REAL_DAY = dt.date(2019, 5, 6)
REASONS = ("Moved to Hamburg, travel too far for the long follow-up", "Daughter asked us to stop sharing")
STATUS_REASON = "Operator note: patient coughed during acquisition"


def _stamp(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, 17, 29, tzinfo=dt.UTC)


def _code(trial, site, serial) -> str:
    """A subject code whose date shift is over 60 days (see the module's note)."""
    for n in serial:
        code = f"MPI-CT-T01-{site.code}-{n:04d}"
        if deidentify.date_shift_days(trial, f.SubjectFactory.build(code=code)) < -60:
            return code
    raise AssertionError("unreachable")


def _subject(trial, site, serial, *, data_sharing=True, withdraw=None):
    subject = f.SubjectFactory(site=site, code=_code(trial, site, serial), enrolment_date=REAL_DAY)
    f.SubjectIdentityFactory(subject=subject, full_name=f"Person {subject.code}")
    consent = f.ConsentFactory(
        subject=subject, scope_data_sharing=data_sharing, signed_at=_stamp(REAL_DAY + dt.timedelta(days=1), 9)
    )
    if withdraw:
        scope, reason = withdraw
        at = _stamp(REAL_DAY + dt.timedelta(days=20), 14)
        consent.withdrawn_scopes = {scope: at.isoformat().replace("+00:00", "Z")}
        consent.withdrawn_at, consent.withdrawal_reason = at, reason
        consent.save()
    batch = f.CellBatchFactory(
        donor_subject=subject,
        manufactured_at=_stamp(REAL_DAY + dt.timedelta(days=3), 8),
        labelled_at=_stamp(REAL_DAY + dt.timedelta(days=4), 8),
    )
    injection = f.InjectionFactory(
        subject=subject,
        batch=batch,
        anatomical_target=f"scar of {subject.code}",
        administered_at=_stamp(REAL_DAY + dt.timedelta(days=7), 10),
    )
    scan = fi.ScanFactory(
        injection=injection,
        filename=f"{subject.code}_day1.mdf",
        status_reason=STATUS_REASON,
        acquisition={"time": _stamp(REAL_DAY + dt.timedelta(days=8), 11).isoformat()},
    )
    measurement = fi.MeasurementFactory(reconstruction=fi.ReconstructionFactory(scan=scan))
    return SimpleNamespace(
        subject=subject, consent=consent, batch=batch, injection=injection, scan=scan, measurement=measurement
    )


@pytest.fixture
def cohort(trial, site_a, site_b, sponsor):
    serial = itertools.count(101)
    shared = _subject(trial, site_a, serial, withdraw=("longitudinal_imaging", REASONS[0]))
    withdrawn = _subject(trial, site_b, serial, withdraw=("data_sharing", REASONS[1]))
    private = _subject(trial, site_a, serial, data_sharing=False)
    return SimpleNamespace(
        shared=shared,
        withdrawn=withdrawn,
        private=private,
        hidden=[withdrawn, private],
        everyone=[shared, withdrawn, private],
    )


def real_dates(record) -> set[str]:
    """Every real date of one subject's records, as ISO days (what a leak looks like)."""
    values = [
        record.subject.enrolment_date,
        record.consent.signed_at,
        record.consent.withdrawn_at,
        record.batch.manufactured_at,
        record.batch.labelled_at,
        record.injection.administered_at,
    ]
    return {(v.date() if isinstance(v, dt.datetime) else v).isoformat() for v in values if v is not None}


def secrets(cohort, site_names=("Charité", "Berlin", "MGH", "Boston")) -> list[str]:
    """Strings no sponsor response may contain."""
    found = [*REASONS, STATUS_REASON, *site_names, "Europe/", "America/"]
    for record in cohort.everyone:
        found += [
            record.subject.code,
            record.batch.chain_of_identity_id,
            record.batch.donation_id,
            record.batch.batch_code,
            record.scan.filename,
            *real_dates(record),
        ]
    return found
