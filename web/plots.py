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


def _y_axis(y_max: float, y_of, *, right: float = RIGHT) -> list[str]:
    parts = []
    for tick in _ticks(y_max):
        y = y_of(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">{_fmt(tick)}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{INK}"/>')
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - right}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" stroke="{INK}"/>'
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


# Each region its own shade of its organ's colour: two lungs are two legend entries.
REGION_SHADES = {
    "lungs": ["#5a8fc2", "#2b5d8c", "#9cc0e0"],
    "liver": ["#b35c00", "#7a3e00", "#e08a3c"],
    "spleen": ["#7b3fa0", "#52296b", "#a875c8"],
    "other": ["#6b7785", "#3f4a56", "#98a3af"],
}
TOTAL_COLOUR = "#c9d1da"  # light, outlined: the alert mark reads on it
LEGEND_WIDTH = 150  # the legend's column, right of the plot: it never covers a bar
TOTAL_GAP = 8.0  # px between a time point's regions and its total


def _region_colours(groups: list[dict]) -> dict[str, str]:
    """A colour per region name, in the order the regions first appear."""
    colours: dict[str, str] = {}
    used: dict[str, int] = {}
    for group in groups:
        for bar in group["bars"]:
            if bar["name"] in colours:
                continue
            shades = REGION_SHADES.get(bar["organ"], REGION_SHADES["other"])
            index = used.get(bar["organ"], 0)
            used[bar["organ"]] = index + 1
            colours[bar["name"]] = shades[index % len(shades)]
    return colours


def off_target_bars(
    groups: list[dict], *, threshold_percent: float | None, element_id: str = "offtarget"
) -> SafeString:
    """Off-target share of detected iron per region, and their total, grouped by time point.

    The trial's alert threshold applies to the total off-target share of a scan (the sum
    over its off-target regions, as stored in the scan's metrics), never to one organ: it
    is drawn across the total's bar only. Each region has its own legend entry.

    ``groups``: [{"hours": float, "bars": [{"organ": kind, "name": str, "percent": float}],
    "total": float | None}].
    """
    bars = [b for g in groups for b in g["bars"]]
    if not bars:
        return mark_safe("")
    totals = [g["total"] for g in groups if g.get("total") is not None]
    y_max = _nice_max(max([b["percent"] for b in bars] + totals + [threshold_percent or 0]), 10)
    right = RIGHT + LEGEND_WIDTH
    plot_w, plot_h = WIDTH - LEFT - right, HEIGHT - TOP - BOTTOM

    def y_of(percent):
        return TOP + plot_h * (1 - max(percent, 0) / y_max)

    body = _y_axis(y_max, y_of, right=right)
    colours = _region_colours(groups)
    group_w = plot_w / len(groups)
    for gi, group in enumerate(groups):
        total = group.get("total")
        n = len(group["bars"]) + (1 if total is not None else 0)
        gap = TOTAL_GAP if total is not None else 0.0  # the total stands apart from the regions
        bar_w = min(28.0, (group_w - 16 - gap) / max(n, 1))
        start = LEFT + gi * group_w + (group_w - bar_w * n - gap) / 2
        for bi, bar in enumerate(group["bars"]):
            y = y_of(bar["percent"])
            body.append(
                f'<rect x="{start + bi * bar_w + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{TOP + plot_h - y:.1f}" fill="{colours[bar["name"]]}"><title>{escape(bar["name"])}: '
                f"{bar['percent']:.1f} % at {group['hours']:g} h</title></rect>"
            )
        if total is not None:
            x, y = start + len(group["bars"]) * bar_w + gap + 1, y_of(total)
            body.append(
                f'<rect class="total" x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{TOP + plot_h - y:.1f}" '
                f'fill="{TOTAL_COLOUR}" stroke="{INK}"><title>total off-target: {total:.1f} % at {group["hours"]:g} h</title></rect>'
            )
            if threshold_percent is not None:
                ty = y_of(threshold_percent)
                body.append(
                    f'<line class="threshold" x1="{x - 4:.1f}" x2="{x + bar_w + 2:.1f}" y1="{ty:.1f}" y2="{ty:.1f}" '
                    f'stroke="{THRESHOLD}" stroke-width="2.5"/>'
                )
        body.append(
            f'<text x="{LEFT + gi * group_w + group_w / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'fill="{MUTED}">{group["hours"]:g} h</text>'
        )
    legend = [
        (name.replace("_", " "), f'<rect width="10" height="10" fill="{colour}"/>') for name, colour in colours.items()
    ]
    if totals:
        legend.append(("total off-target", f'<rect width="10" height="10" fill="{TOTAL_COLOUR}" stroke="{INK}"/>'))
    if threshold_percent is not None and totals:
        legend.append(
            (
                f"alert at {threshold_percent:g} % (total)",
                f'<line x1="0" x2="10" y1="5" y2="5" stroke="{THRESHOLD}" stroke-width="2.5"/>',
            )
        )
    x0 = WIDTH - RIGHT - LEGEND_WIDTH + 12
    for index, (name, swatch) in enumerate(legend):
        y0 = TOP + 4 + 16 * index
        body.append(
            f'<g class="legend-entry" transform="translate({x0} {y0})">{swatch}'
            f'<text x="15" y="9" fill="{INK}">{escape(name)}</text></g>'
        )
    desc = "; ".join(
        f"{g['hours']:g} h: "
        + ", ".join(f"{b['name']} {b['percent']:.1f} %" for b in g["bars"])
        + (f", total off-target {g['total']:.1f} %" if g.get("total") is not None else "")
        for g in groups
    )
    if threshold_percent is not None:
        desc += f". The alert threshold, {threshold_percent:g} %, applies to the total."
    # Every text is escaped in _frame; element_id is the template's own constant id.
    return mark_safe(  # noqa: S308
        _frame(
            "Off-target iron by region, and the total the alert applies to",
            desc,
            body,
            "time point",
            "% of detected iron",
        ).replace("{id}", element_id)
    )


def plot_data(time_course: dict, off_target_totals: dict | None = None) -> tuple[list[dict], list[dict]]:
    """imaging.selectors.time_course -> (retention series, off-target groups).

    Only stored values are drawn (the Measurement rows, and each scan's stored total
    off-target share, ``off_target_totals``: scan id -> percent): a point and its error
    bar are never recomputed here. Two scans at one time point: the larger total shows
    (the one an alert would be about)."""
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
    totals: dict[float, float] = {}
    for series in time_course["series"]:
        for p in series["points"]:
            value = (off_target_totals or {}).get(p["scan_id"])
            if value is not None and series["roi_kind"] != "target":
                totals[p["hours"]] = max(value, totals.get(p["hours"], value))
    groups = [
        {"hours": h, "bars": sorted(b, key=lambda x: x["name"]), "total": totals.get(h)}
        for h, b in sorted(by_hours.items())
    ]
    return retention, groups
