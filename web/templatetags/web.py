"""Small presentation helpers shared by the pages."""

from __future__ import annotations

from django import template
from django.utils.html import format_html

from recon.quantify import GEOMETRY_SIZE_KEYS
from web import queries

register = template.Library()

# Status words -> badge tone (neutral, progress, good, warning, bad).
_TONES = {
    "received": "neutral",
    "validating": "progress",
    "validated": "progress",
    "reconstructing": "progress",
    "reconstructed": "progress",
    "quantified": "good",
    "rejected": "bad",
    "failed": "bad",
    "screening": "neutral",
    "enrolled": "good",
    "completed": "neutral",
    "withdrawn": "warn",
    "quarantined": "warn",
    "released": "good",
    "pending": "warn",
    "queued": "neutral",
    "open": "neutral",
    "streaming": "progress",
    "ended": "good",
    "aborted": "bad",
    "running": "progress",
    "ready": "good",
    "sent": "good",
}


@register.simple_tag
def badge(status, label=None):
    if not status:
        return format_html('<span class="badge tone-neutral">{}</span>', label or "none")
    return format_html(
        '<span class="badge tone-{}" data-status="{}">{}</span>',
        _TONES.get(str(status), "neutral"),
        status,
        label or str(status).replace("_", " "),
    )


@register.simple_tag
def nav_roles(user):
    """The user's roles for the navigation (one query per page)."""
    return queries.roles_of(user) if user.is_authenticated else {}


@register.filter
def pct(value, digits=1):
    if value is None or value == "":
        return "—"
    return f"{float(value):.{int(digits)}f} %"


@register.filter
def num(value, digits=1):
    if value is None or value == "":
        return "—"
    return f"{float(value):,.{int(digits)}f}"


@register.filter
def get(mapping, key):
    return (mapping or {}).get(key)


@register.filter
def words(value):
    return str(value).replace("_", " ")


@register.simple_tag
def roi_geometry(geometry):
    """A geometric ROI in millimetres, as a person reads it: 'sphere, centre (0, 0, 10) mm, radius 8 mm'."""
    mm = lambda values: ", ".join(f"{v * 1000:g}" for v in values)  # noqa: E731
    shape = geometry.get("shape", "?")
    parts = [str(shape), f"centre ({mm(geometry.get('center_m', []))}) mm"]
    key = GEOMETRY_SIZE_KEYS.get(shape)
    if key is not None and key in geometry:
        value = geometry[key]
        values = value if isinstance(value, list) else [value]
        label = key.removesuffix("_m").replace("_", "-")  # radius, semi-axes, half-size
        parts.append(f"{label} {mm(values[:1] if len(set(values)) == 1 else values)} mm")
    return ", ".join(parts)
