"""``{{ value|at_site:site }}``: a stored time on the site's clock, with UTC beside it
(hover, and for machines the ``datetime`` attribute): trials.site_time. A row of no site
passes None and gets UTC, labelled."""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils.html import format_html

from trials import site_time

register = template.Library()


def _on_the_clock(value: dt.datetime, site, fmt: str) -> str:
    """``value`` on ``site``'s clock, its zone named, UTC beside it and in full on hover;
    with no site (a row of the whole platform: a worker, a trial-wide export, an event of
    no site's), in UTC, labelled. ``datetime`` carries the instant for machines."""
    utc = value.astimezone(dt.UTC)
    instant = utc.isoformat().replace("+00:00", "Z")
    if site is None:
        return format_html('<time datetime="{}">{} UTC</time>', instant, f"{utc:%Y-%m-%d {fmt}}")
    local = site_time.at_site(value, site.time_zone)
    return format_html(
        '<time datetime="{}" title="{} UTC">{} {}</time> <span class="muted small">({} UTC)</span>',
        instant,
        f"{utc:%Y-%m-%d {fmt}}",
        f"{local:%Y-%m-%d {fmt}}",
        local.tzname(),
        f"{utc:{fmt}}",
    )


@register.filter
def at_site(value: dt.datetime | None, site) -> str:
    """'2026-01-15 10:05 CET (09:05 UTC)'; with no site, '2026-01-15 09:05 UTC'."""
    return "" if value is None else _on_the_clock(value, site, "%H:%M")


@register.filter
def seconds_at_site(value: dt.datetime | None, site) -> str:
    """``at_site`` to the second, for trails read in order (audit events, corrections):
    '2026-01-15 10:05:07 CET (09:05:07 UTC)'; with no site, '2026-01-15 09:05:07 UTC'."""
    return "" if value is None else _on_the_clock(value, site, "%H:%M:%S")


@register.filter
def utc(value: dt.datetime | None) -> str:
    """A time of no site's (workers, leases, checkpoints), to the second, labelled UTC."""
    return "" if value is None else _on_the_clock(value, None, "%H:%M:%S")


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
