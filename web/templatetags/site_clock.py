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
