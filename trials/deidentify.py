"""HIPAA Safe Harbor helpers for de-identified (sponsor) exports, shared with the DICOM
de-identification: pure functions of a trial's secret and a subject's code, kept beside
the trial (which owns the secret) so that imaging's DICOM export can use them. What a
sponsor is shown, and where, is decided in one place above them: ``compliance.sponsor``.

Pseudonyms and date shifts are keyed by the trial's ``deidentification_secret``, so
they are the same in every export of a trial and cannot be reversed or recomputed
without the secret (which is never exported or shown).

Date shift: every date and time of one subject moves back by the same number of days,
``date_shift_days`` in ``[-DATE_SHIFT_MAX_DAYS, -1]``, so intervals between a
subject's events (days from injection to scan) are kept exactly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

DATE_SHIFT_MAX_DAYS = 365
AGE_CEILING = 89  # 45 CFR 164.514(b)(2)(i)(C): ages over 89 are aggregated as "90+"


def _hmac(trial, message: str) -> bytes:
    return hmac.new(trial.deidentification_secret.encode(), message.encode(), hashlib.sha256).digest()


def date_shift_days(trial, subject) -> int:
    """Days (negative, -365..-1) by which every date of ``subject`` is shifted.

    HMAC-SHA256(trial secret, "date-shift:" + subject code), first 8 bytes as an
    unsigned integer, modulo 365, plus one, negated.
    """
    value = int.from_bytes(_hmac(trial, f"date-shift:{subject.code}")[:8], "big")
    return -(value % DATE_SHIFT_MAX_DAYS + 1)


def subject_pseudonym(trial, subject) -> str:
    """A stable code for ``subject`` in de-identified exports, e.g. ``P-7F3A9C21D0``.

    Not the site's subject code (the site can map that back to the patient)."""
    return "P-" + _hmac(trial, f"pseudonym:{subject.code}").hex()[:10].upper()


def opaque_id(trial, kind: str, value: str) -> str:
    """A stable keyed stand-in for another identifying number (chain-of-identity id,
    donation number, device serial)."""
    return f"{kind}-" + _hmac(trial, f"{kind}:{value}").hex()[:12].upper()


def shift_date(value, days: int):
    if value is None:
        return None
    return value + dt.timedelta(days=days)


def shifted_day(value, days: int) -> dt.date | None:
    """``value`` (a date, or an aware datetime taken in UTC) shifted by ``days``, as a
    day: the form every shifted date has in the sponsor's view and data set."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).date()
    return value + dt.timedelta(days=days)


def age_in_years(date_of_birth: dt.date, on: dt.date) -> int:
    return on.year - date_of_birth.year - ((on.month, on.day) < (date_of_birth.month, date_of_birth.day))


def safe_harbor_age(date_of_birth: dt.date | None, on: dt.date) -> str:
    """Age at ``on`` in whole years, as text; "90+" above 89; "" when unknown."""
    if date_of_birth is None:
        return ""
    age = age_in_years(date_of_birth, on)
    return "90+" if age > AGE_CEILING else str(age)
