"""The protocol's imaging schedule: when, after the injection, a subject is scanned.

DOMAIN §2: follow-up scans at 0, 24, 48 and 72 h (labels are stable in vivo for about
72 h). A scan counts for a time point when its hours after injection fall within the
window around it; a time point is overdue once its window has closed without one.
"""

from __future__ import annotations

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
