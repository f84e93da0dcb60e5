"""Inline SVG plots generated on the server: no chart library, nothing to load, and
the page's Content Security Policy (no inline styles) holds because only SVG
presentation attributes are used.

Each function takes plain numbers and returns safe SVG markup with a <title> and
<desc> for screen readers; the page shows the same numbers in a table beside it.
"""

from __future__ import annotations

import math

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

ACCENT = "#1f5f99"
SERIES_COLOURS = ["#1f5f99", "#b35c00", "#2e7d4f", "#7b3fa0", "#8a6d00"]
ORGAN_COLOURS = {"lungs": "#5a8fc2", "liver": "#b35c00", "spleen": "#7b3fa0", "other": "#6b7785"}
INK, MUTED, GRID = "#1d2733", "#5b6b7c", "#dfe5ec"
THRESHOLD = "#a32020"

WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 44


def _nice_max(value: float, floor: float) -> float:
    value = max(value, floor)
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _ticks(maximum: float, count: int = 5) -> list[float]:
    return [maximum * i / count for i in range(count + 1)]


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.1e}"


def _frame(title: str, desc: str, body: list[str], x_label: str, y_label: str) -> SafeString:
    return mark_safe(  # noqa: S308 - every text interpolated here is escaped
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{{id}}-t {{id}}-d" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="inherit" font-size="12">'
        f'<title id="{{id}}-t">{escape(title)}</title><desc id="{{id}}-d">{escape(desc)}</desc>'
        + "".join(body)
        + f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle" fill="{MUTED}">'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(14 {TOP + (HEIGHT - TOP - BOTTOM) / 2}) rotate(-90)" text-anchor="middle" '
        f'fill="{MUTED}">{escape(y_label)}</text></svg>'
    )


def _y_axis(y_max: float, y_of) -> list[str]:
    parts = []
    for tick in _ticks(y_max):
        y = y_of(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">{_fmt(tick)}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{INK}"/>')
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" stroke="{INK}"/>'
    )
    return parts


def retention_curve(series: list[dict], *, element_id: str = "retention") -> SafeString:
    """% of injected iron in each target ROI over hours after injection, ± 1 SD.

    ``series``: [{"name": str, "points": [{"hours", "percent", "sd_percent"}]}].
    """
    points = [p for s in series for p in s["points"]]
    if not points:
        return mark_safe("")
    # Follow-up is planned in days: the time axis runs in whole days, ticked every 6, 12 or 24 h.
    x_max = 24.0 * max(1, math.ceil(max(p["hours"] for p in points) / 24.0 + 1e-9))
    x_step = 6.0 if x_max <= 24 else 12.0 if x_max <= 72 else 24.0
    y_max = _nice_max(max(p["percent"] + p["sd_percent"] for p in points), 10)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(hours):
        return LEFT + plot_w * hours / x_max

    def y_of(percent):
        return TOP + plot_h * (1 - max(percent, 0) / y_max)

    body = _y_axis(y_max, y_of)
    for tick in _ticks(x_max, int(x_max / x_step)):
        x = x_of(tick)
        body.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" fill="{MUTED}">{_fmt(tick)}</text>'
        )
    for index, s in enumerate(series):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        pts = sorted(s["points"], key=lambda p: p["hours"])
        if len(pts) > 1:
            path = " ".join(f"{x_of(p['hours']):.1f},{y_of(p['percent']):.1f}" for p in pts)
            body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for p in pts:
            x, lo, hi = x_of(p["hours"]), y_of(p["percent"] - p["sd_percent"]), y_of(p["percent"] + p["sd_percent"])
            body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{lo:.1f}" y2="{hi:.1f}" stroke="{colour}"/>')
            body.append(f'<line x1="{x - 4:.1f}" x2="{x + 4:.1f}" y1="{lo:.1f}" y2="{lo:.1f}" stroke="{colour}"/>')
            body.append(f'<line x1="{x - 4:.1f}" x2="{x + 4:.1f}" y1="{hi:.1f}" y2="{hi:.1f}" stroke="{colour}"/>')
            body.append(
                f'<circle cx="{x:.1f}" cy="{y_of(p["percent"]):.1f}" r="4" fill="{colour}">'
                f"<title>{escape(s['name'])}: {p['percent']:.1f} ± {p['sd_percent']:.1f} % at {p['hours']:g} h</title>"
                f"</circle>"
            )
        body.append(
            f'<rect x="{WIDTH - RIGHT - 150}" y="{TOP + 4 + 16 * index}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{WIDTH - RIGHT - 135}" y="{TOP + 13 + 16 * index}" fill="{INK}">{escape(s["name"])}</text>'
        )
    desc = "; ".join(
        f"{s['name']}: "
        + ", ".join(f"{p['percent']:.1f} ± {p['sd_percent']:.1f} % at {p['hours']:g} h" for p in s["points"])
        for s in series
    )
    # Every text is escaped in _frame; element_id is the template's own constant id.
    return mark_safe(  # noqa: S308
        _frame(
            "Retention at the target over time",
            desc,
            body,
            "hours after injection",
            "% of injected iron",
        ).replace("{id}", element_id)
    )


def off_target_bars(
    groups: list[dict], *, threshold_percent: float | None, element_id: str = "offtarget"
) -> SafeString:
    """Off-target share of detected iron per organ, grouped by time point.

    ``groups``: [{"hours": float, "bars": [{"organ": kind, "name": str, "percent": float}]}].
    """
    bars = [b for g in groups for b in g["bars"]]
    if not bars:
        return mark_safe("")
    y_max = _nice_max(max([b["percent"] for b in bars] + [threshold_percent or 0]), 10)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y_of(percent):
        return TOP + plot_h * (1 - max(percent, 0) / y_max)

    body = _y_axis(y_max, y_of)
    group_w = plot_w / len(groups)
    organs = []
    for gi, group in enumerate(groups):
        n = max(len(group["bars"]), 1)
        bar_w = min(36.0, (group_w - 16) / n)
        start = LEFT + gi * group_w + (group_w - bar_w * n) / 2
        for bi, bar in enumerate(group["bars"]):
            colour = ORGAN_COLOURS.get(bar["organ"], ORGAN_COLOURS["other"])
            organ = bar["organ"].replace("_", " ")
            if (organ, colour) not in organs:  # one legend entry per organ, however many ROIs
                organs.append((organ, colour))
            y = y_of(bar["percent"])
            body.append(
                f'<rect x="{start + bi * bar_w + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{TOP + plot_h - y:.1f}" fill="{colour}"><title>{escape(bar["name"])}: '
                f"{bar['percent']:.1f} % at {group['hours']:g} h</title></rect>"
            )
        body.append(
            f'<text x="{LEFT + gi * group_w + group_w / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'fill="{MUTED}">{group["hours"]:g} h</text>'
        )
    if threshold_percent is not None:
        y = y_of(threshold_percent)
        body.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{THRESHOLD}" '
            f'stroke-dasharray="6 4" stroke-width="1.5"/>'
            f'<text x="{WIDTH - RIGHT - 4}" y="{y - 5:.1f}" text-anchor="end" fill="{THRESHOLD}">'
            f"alert threshold {threshold_percent:g} %</text>"
        )
    for index, (name, colour) in enumerate(organs):
        body.append(
            f'<rect x="{LEFT + 10}" y="{TOP + 4 + 16 * index}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{LEFT + 25}" y="{TOP + 13 + 16 * index}" fill="{INK}">{escape(name)}</text>'
        )
    desc = "; ".join(
        f"{g['hours']:g} h: " + ", ".join(f"{b['name']} {b['percent']:.1f} %" for b in g["bars"]) for g in groups
    )
    # Every text is escaped in _frame; element_id is the template's own constant id.
    return mark_safe(  # noqa: S308
        _frame(
            "Off-target iron by organ",
            desc,
            body,
            "time point",
            "% of detected iron",
        ).replace("{id}", element_id)
    )


def plot_data(time_course: dict) -> tuple[list[dict], list[dict]]:
    """imaging.selectors.time_course -> (retention series, off-target groups).

    Only stored values are drawn (the Measurement rows): a point and its error bar are
    never recomputed here."""
    retention: list[dict] = []
    by_hours: dict[float, list[dict]] = {}
    for series in time_course["series"]:
        if series["roi_kind"] == "target":
            retention.append(
                {
                    "name": series["roi_name"],
                    "points": [
                        {
                            "hours": p["hours"],
                            "percent": p["retention_percent"],
                            "sd_percent": p["retention_uncertainty_percent"] or 0.0,
                        }
                        for p in series["points"]
                    ],
                }
            )
        else:
            for p in series["points"]:
                by_hours.setdefault(p["hours"], []).append(
                    {"organ": series["roi_kind"], "name": series["roi_name"], "percent": p["off_target_percent"] or 0.0}
                )
    groups = [{"hours": h, "bars": sorted(b, key=lambda x: x["name"])} for h, b in sorted(by_hours.items())]
    return retention, groups
