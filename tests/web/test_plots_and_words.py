"""Plots and words that said something else than the record (issue #18, item 6): the
off-target alert line applies to the total off-target share, each region has its own
legend entry, and a first reconstruction is not "attempt 2"."""

from __future__ import annotations

import re

import pytest

from web import plots

GROUPS = [
    {
        "hours": 24.0,
        "bars": [
            {"organ": "liver", "name": "liver", "percent": 18.0},
            {"organ": "lungs", "name": "lung_left", "percent": 5.0},
            {"organ": "lungs", "name": "lung_right", "percent": 4.0},
        ],
        "total": 27.0,
    },
    {
        "hours": 48.0,
        "bars": [
            {"organ": "liver", "name": "liver", "percent": 10.0},
            {"organ": "lungs", "name": "lung_left", "percent": 3.0},
            {"organ": "lungs", "name": "lung_right", "percent": 2.0},
        ],
        "total": 15.0,
    },
]
PX = 0.5  # SVG coordinates are written to 0.1 px


def _rects(svg: str) -> list[dict]:
    return [
        {
            "x": float(m.group("x")),
            "y": float(m.group("y")),
            "w": float(m.group("w")),
            "h": float(m.group("h")),
            "fill": m.group("fill"),
            "title": m.group("title"),
            "total": bool(m.group("cls")),
        }
        for m in re.finditer(
            r'<rect (?P<cls>class="total" )?x="(?P<x>[\d.]+)" y="(?P<y>[\d.]+)" width="(?P<w>[\d.]+)" '
            r'height="(?P<h>[\d.]+)" fill="(?P<fill>#\w+)"[^>]*><title>(?P<title>[^<]+)</title>',
            svg,
        )
    ]


def _threshold_lines(svg: str) -> list[tuple[float, float, float]]:
    return [
        (float(m.group(1)), float(m.group(2)), float(m.group(3)))
        for m in re.finditer(r'<line class="threshold" x1="([\d.]+)" x2="([\d.]+)" y1="([\d.]+)"', svg)
    ]


def _legend(svg: str) -> list[str]:
    return re.findall(r'<g class="legend-entry"[^>]*>.*?<text[^>]*>([^<]+)</text></g>', svg)


def test_the_alert_line_is_drawn_across_the_total_only():
    svg = str(plots.off_target_bars(GROUPS, threshold_percent=20.0))
    rects = _rects(svg)
    totals = [r for r in rects if r["total"]]
    organs = [r for r in rects if not r["total"]]
    assert [r["title"] for r in totals] == ["total off-target: 27.0 % at 24 h", "total off-target: 15.0 % at 48 h"]
    lines = _threshold_lines(svg)
    assert len(lines) == len(totals)  # one short mark per total bar, no line across the organ bars
    for (x1, x2, _y), total in zip(lines, totals, strict=True):
        assert total["x"] - 5 - PX <= x1 and x2 <= total["x"] + total["w"] + 5 + PX
        for organ in organs:  # never over an organ's bar
            assert x2 <= organ["x"] + PX or x1 >= organ["x"] + organ["w"] - PX
    # At the same height: 20 % on the axis the bars use (27 % total is above it, 15 % below).
    y20 = {round(y, 1) for _, _, y in lines}
    assert len(y20) == 1
    assert totals[0]["y"] < y20.pop() < totals[1]["y"]


def test_each_region_has_its_own_legend_entry():
    svg = str(plots.off_target_bars(GROUPS, threshold_percent=20.0))
    assert _legend(svg) == ["liver", "lung left", "lung right", "total off-target", "alert at 20 % (total)"]
    fills = {r["title"].split(":")[0]: r["fill"] for r in _rects(svg)}
    assert fills["lung_left"] != fills["lung_right"]  # two lungs, two colours


def test_plot_data_takes_the_total_from_the_scans_stored_metrics():
    course = {
        "series": [
            {
                "roi_kind": "lungs",
                "roi_name": "lung_left",
                "points": [{"hours": 24.0, "off_target_percent": 5.0, "scan_id": 7}],
            },
            {
                "roi_kind": "liver",
                "roi_name": "liver",
                "points": [{"hours": 24.0, "off_target_percent": 18.0, "scan_id": 7}],
            },
        ]
    }
    _, groups = plots.plot_data(course, off_target_totals={7: 23.4})
    assert [(g["hours"], g["total"], [b["name"] for b in g["bars"]]) for g in groups] == [
        (24.0, 23.4, ["liver", "lung_left"])
    ]


@pytest.fixture
def page(browser_client, investigator_a, quantified):
    return browser_client(investigator_a)


def test_the_subject_page_draws_the_alert_against_the_total(page, quantified):
    html = page.get(f"/subjects/{quantified.subject_id}/").content.decode()
    total = quantified.metrics_summary["off_target_percent"]
    assert "total off-target" in html and f"total off-target: {total:.1f} %" in html
    assert len(_threshold_lines(html)) == 1  # one scan, one total, one mark
    names = sorted({m.roi_name for m in quantified.measurements.all() if m.roi_kind != "target"})
    legend = _legend(html)
    assert [n.replace("_", " ") for n in names] == legend[: len(names)]


def test_a_first_reconstruction_is_not_called_attempt_2(page, quantified):
    reconstruction = quantified.reconstructions.get()
    assert reconstruction.attempt == 2  # the pipeline's claims: validation was the first
    html = page.get(f"/scans/{quantified.pk}/").content.decode()
    assert "attempt 2" not in html
    assert re.search(r"<dt>Reconstruction</dt><dd>1 of 1 ·", html)
