"""``{{ value|at_site:site }}``: a stored time on the site's clock, with UTC beside it
(hover, and for machines the ``datetime`` attribute): trials.site_time."""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils.html import format_html

from trials import site_time

register = template.Library()


@register.filter
def at_site(value: dt.datetime | None, site) -> str:
    if value is None:
        return ""
    utc = value.astimezone(dt.UTC)
    local = site_time.at_site(value, site.time_zone)
    return format_html(
        '<time datetime="{}" title="{} UTC">{} {}</time> <span class="muted small">({} UTC)</span>',
        utc.isoformat().replace("+00:00", "Z"),
        f"{utc:%Y-%m-%d %H:%M}",
        f"{local:%Y-%m-%d %H:%M}",
        local.tzname(),
        f"{utc:%H:%M}",
    )


@register.filter
def time_at_site(value: dt.datetime | None, site) -> str:
    """The time of day on the site's clock, to the second, its zone named; the full UTC
    time on hover: for the events of one session (live marks and alerts)."""
    if value is None:
        return ""
    utc = value.astimezone(dt.UTC)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        utc.isoformat().replace("+00:00", "Z"),
        f"{utc:%Y-%m-%d %H:%M:%S}",
        site_time.stamp(value, site.time_zone, "%H:%M:%S"),
    )


@register.filter
def date_at_site(value: dt.datetime | None, site) -> str:
    """The date on the site's clock of a stored time (a consent signed late in the evening
    in Boston is that day's, not the next UTC day's)."""
    return "" if value is None else f"{site_time.at_site(value, site.time_zone):%Y-%m-%d}"


@register.filter
def stamp_at_site(value: dt.datetime | None, site) -> str:
    """Plain text for where no markup may go (an option of a list): '2026-01-15 10:05 CET'."""
    return "" if value is None else site_time.stamp(value, site.time_zone)
