"""The protocol's imaging schedule: when, after the injection, a subject is scanned.

DOMAIN §2: follow-up scans at 0, 24, 48 and 72 h (labels are stable in vivo for about
72 h). A scan counts for a time point when its hours after injection fall within the
window around it; a time point is overdue once its window has closed without one.
"""

from __future__ import annotations

from collections.abc import Iterable

# Hours after injection, in protocol order.
IMAGING_SCHEDULE_HOURS: tuple[float, ...] = (0.0, 24.0, 48.0, 72.0)

# A scan within this many hours of a time point counts for it; a time point with no scan
# is overdue this many hours after it was due.
TIME_POINT_WINDOW_HOURS = 6.0


def time_point_of(hours_after_injection: float) -> float | None:
    """The scheduled time point a scan at ``hours_after_injection`` counts for, or None."""
    for hours in IMAGING_SCHEDULE_HOURS:
        if abs(hours_after_injection - hours) <= TIME_POINT_WINDOW_HOURS:
            return hours
    return None


def consent_scopes_for_scan(hours_after_injection: float, *, hours_on_file: Iterable[float]) -> tuple[str, ...]:
    """The consent scopes a scan at ``hours_after_injection`` needs (DOMAIN §4), given the
    hours after injection of the scans of the same injection already on file (rejected
    ones left out by the caller). The first scan of an injection needs ``imaging``, whatever
    its time point (a subject who missed 0 h may have 24 h as the first); a scan with an
    earlier one on file is follow-up imaging and needs ``longitudinal_imaging`` as well.

    The one rule: the upload and processing check
    (``imaging.services.scan_uploads.imaging_scopes``) and the status grid
    (``web.records_queries.status_grid``) both ask it."""
    if any(hours < hours_after_injection for hours in hours_on_file):
        return ("imaging", "longitudinal_imaging")
    return ("imaging",)
