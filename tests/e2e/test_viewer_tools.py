"""The scan viewer's tools in Chromium: the iron under the cursor is the stored value,
window / level presets and inputs, zoom, another time point beside this one with a linked
cursor, a region drawn with the mouse and with the keyboard (its iron from the server),
and the region saved as a region of interest (audited)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from audit.actions import AuditAction
from imaging.models import RegionOfInterest
from tests.conftest import last_event
from tests.imaging.helpers import process, uploaded_scan
from web import queries, volume

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

READOUT = re.compile(r"^x (\d+), y (\d+): ([-\d.,e+]+) ng Fe \(scan #(\d+)\)")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_viewer_tools_read_draw_compare_and_save(browse, api, pipeline, imaging_a, simulate):
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    later = process(uploaded_scan(api, pipeline, simulate(1, frames=12)["measurement"], hours=48.0))
    assert scan.status == later.status == "quantified"
    vol = volume.load(queries.reconstruction_of(scan))
    ng = volume.ng_per_voxel(vol)

    staff = browse(imaging_a)
    page = staff.page
    staff.go(f"/scans/{scan.pk}/")
    page.locator("#viewer-tools[data-ready='axial/0/-']").wait_for()
    canvas = page.locator("#vt-canvas-0")

    # The value under the pointer is the stored one (ng Fe per voxel), not a colour.
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()  # viewport coordinates, with the canvas in view
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.45)
    match = READOUT.match(page.locator("#vt-readout").inner_text())
    assert match, page.locator("#vt-readout").inner_text()
    x, y = int(match[1]), int(match[2])
    assert _number(match[3]) == pytest.approx(vol.values[0, y, x] * ng, rel=2e-3, abs=1e-6)

    # Keyboard: the cursor moves one voxel per arrow key.
    canvas.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowUp")
    moved = READOUT.match(page.locator("#vt-readout").inner_text())
    assert (int(moved[1]), int(moved[2])) == (min(x + 1, 11), min(y + 1, 11))

    # Window / level: the preset sets the inputs, the inputs set the window.
    vmax = vol.vmax * ng
    page.get_by_label("Preset").select_option("hot")
    assert float(page.get_by_label("Window (ng Fe)").input_value()) == pytest.approx(vmax / 2, rel=1e-3)
    assert float(page.get_by_label("Level (ng Fe)").input_value()) == pytest.approx(vmax * 0.75, rel=1e-3)
    page.get_by_label("Preset").select_option("full")
    before = canvas.screenshot()
    page.get_by_role("button", name="Zoom in").click()
    page.get_by_role("button", name="Zoom in").click()
    assert canvas.screenshot() != before
    page.get_by_role("button", name="Reset view").click()

    # Drawing a region with the mouse: the server sums the stored values inside it.
    page.get_by_label("draws a region").check()
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.75, steps=5)
    page.mouse.up()
    page.locator("#vt-region-result[data-iron-ng]").wait_for()
    h0, h1, v0, v1 = (int(page.locator(f"#vt-{k}").input_value()) for k in ("h0", "h1", "v0", "v1"))
    assert h0 < h1 and v0 < v1
    expected = vol.values[0, v0 : v1 + 1, h0 : h1 + 1].sum() * ng
    shown = float(page.locator("#vt-region-result").get_attribute("data-iron-ng"))
    assert shown == pytest.approx(expected, rel=1e-9)
    assert "ng Fe in" in page.locator("#vt-region-result").inner_text()
    staff.shot("20-viewer-tools-region")

    # The same by keyboard: Enter marks a corner, arrows move, Enter closes the rectangle.
    canvas.focus()
    page.keyboard.press("Enter")
    for key in ("ArrowLeft", "ArrowLeft", "ArrowDown"):
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.getElementById('vt-h1').value - document.getElementById('vt-h0').value === 2"
    )
    assert int(page.locator("#vt-v1").input_value()) - int(page.locator("#vt-v0").input_value()) == 1

    # Another time point beside this one: same slice, linked cursor.
    page.get_by_label("Beside it, the same slice of").select_option(str(later.pk))
    page.locator(f"#viewer-tools[data-ready='axial/0/{later.pk}']").wait_for()
    assert page.locator("#vt-pane-1").is_visible()
    assert "48 h" in page.locator("#vt-cap-1").inner_text()
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    readout = page.locator("#vt-readout").inner_text()
    assert f"(scan #{scan.pk})" in readout and f"(scan #{later.pk}, 48 h)" in readout
    other = page.locator("#vt-canvas-1").bounding_box()
    page.mouse.move(other["x"] + other["width"] * 0.5, other["y"] + other["height"] * 0.5)
    assert page.locator("#vt-readout").inner_text() == readout  # the same voxel, from either pane
    staff.shot("21-viewer-tools-side-by-side")

    # Saving the region: an ROI of this scan through the ROI service, audited.
    page.get_by_label("Region name").fill("drawn hot spot")
    page.get_by_label("Kind").select_option("target")
    page.get_by_role("button", name="Save as region of interest").click()
    page.locator("#vt-region-result[data-roi]").wait_for()
    roi = RegionOfInterest.objects.get(name="drawn hot spot")
    assert roi.scan_id == scan.pk and roi.created_by_id == imaging_a.pk
    assert last_event().action == AuditAction.ROI_DEFINED
    mask = volume.roi_masks([roi], vol.grid)[0][1]
    h0, h1, v0, v1 = (int(page.locator(f"#vt-{k}").input_value()) for k in ("h0", "h1", "v0", "v1"))
    drawn = np.zeros_like(mask)
    drawn[0, v0 : v1 + 1, h0 : h1 + 1] = True
    assert (mask == drawn).all()

    # A second save under the same name is refused in words next to the form.
    page.get_by_role("button", name="Save as region of interest").click()
    page.locator("#vt-region-error").wait_for(state="visible")
    assert "already exists" in page.locator("#vt-region-error").inner_text()
    assert RegionOfInterest.objects.filter(name="drawn hot spot").count() == 1
