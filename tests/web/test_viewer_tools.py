"""The scan viewer's tools: a slice as iron per voxel (ng Fe) from the stored
reconstruction, the iron inside a rectangle drawn on it (computed by the server), and that
rectangle saved as a region of interest through the ROI service (audited); other sites and
sponsors get 404, and a GET writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.dicom_export import roi_mask
from imaging.models import RegionOfInterest
from recon.physics import IRON_MOLAR_MASS_G_PER_MOL
from tests.conftest import last_event
from web import queries, volume

pytestmark = pytest.mark.django_db

REL = 1e-3  # the JSON carries 4 significant digits


def _volume(scan):
    return volume.load(queries.reconstruction_of(scan))


def _ng(vol) -> float:
    return vol.grid.voxel_volume_l * IRON_MOLAR_MASS_G_PER_MOL * 1e9


def _region(h0=2, h1=7, v0=3, v1=9, **more):
    return {"plane": "axial", "index": 0, "h0": h0, "h1": h1, "v0": v0, "v1": v1, **more}


def test_a_slice_is_served_as_iron_per_voxel_from_the_stored_values(browser_client, imaging_a, quantified):
    vol = _volume(quantified)
    client = browser_client(imaging_a)  # signing in is audited: count after it
    before = AuditEvent.objects.count()
    response = client.get(f"/scans/{quantified.pk}/values/axial/0.json")
    assert response.status_code == 200
    data = response.json()
    assert (data["rows"], data["cols"], data["count"]) == (12, 12, 1)
    assert data["axes"] == ["x", "y"] and len(data["lut"]) == 256
    values = np.array(data["values_ng"])
    expected = vol.values[0][::-1] * _ng(vol)  # row 0 on screen is the highest y
    assert np.allclose(values, expected, rtol=REL, atol=1e-9 * np.abs(expected).max())
    assert data["vmax_ng"] == pytest.approx(vol.vmax * _ng(vol), rel=REL)
    assert AuditEvent.objects.count() == before  # a GET writes nothing


def test_a_slice_outside_the_volume_or_an_unknown_plane_is_404(browser_client, imaging_a, quantified):
    client = browser_client(imaging_a)
    assert client.get(f"/scans/{quantified.pk}/values/axial/1.json").status_code == 404
    assert client.get(f"/scans/{quantified.pk}/values/mip/0.json").status_code == 404
    assert client.get(f"/scans/{quantified.pk}/values/oblique/0.json").status_code == 404


def test_the_iron_inside_a_drawn_rectangle_is_summed_from_the_stored_values(browser_client, imaging_a, quantified):
    vol = _volume(quantified)
    client = browser_client(imaging_a)
    before = AuditEvent.objects.count(), RegionOfInterest.objects.count()
    response = client.get(f"/scans/{quantified.pk}/region/", _region())
    assert response.status_code == 200, response.content
    body = response.json()
    inside = vol.values[0, 3:10, 2:8]  # v (y) 3..9, h (x) 2..7, inclusive
    assert body["voxels"] == inside.size == 42
    assert body["iron_ng"] == pytest.approx(inside.sum() * _ng(vol), rel=1e-9)
    assert body["geometry"]["shape"] == "box"
    assert (AuditEvent.objects.count(), RegionOfInterest.objects.count()) == before


def test_the_whole_image_holds_the_whole_slice_iron(browser_client, imaging_a, quantified):
    vol = _volume(quantified)
    body = browser_client(imaging_a).get(f"/scans/{quantified.pk}/region/", _region(0, 11, 0, 11)).json()
    assert body["voxels"] == 144
    assert body["iron_ng"] == pytest.approx(vol.values.sum() * _ng(vol), rel=1e-9)


def test_a_drawn_region_is_saved_as_a_region_of_interest_and_audited(browser_client, imaging_a, quantified):
    response = browser_client(imaging_a).post(
        f"/scans/{quantified.pk}/region/", _region(name="hot spot", kind="target", scope="scan")
    )
    assert response.status_code == 201, response.content
    roi = RegionOfInterest.objects.get(name="hot spot")
    assert (roi.scan_id, roi.subject_id, roi.kind, roi.created_by) == (
        quantified.pk,
        quantified.subject_id,
        "target",
        imaging_a,
    )
    # The saved region covers exactly the voxels drawn.
    vol = _volume(quantified)
    mask = roi_mask(roi, vol.grid)
    drawn = np.zeros_like(mask)
    drawn[0, 3:10, 2:8] = True
    assert (mask == drawn).all()
    event = last_event()
    assert event.action == AuditAction.ROI_DEFINED and event.object_id == str(roi.pk)
    assert event.actor_id == imaging_a.pk
    assert response.json()["roi"]["pk"] == roi.pk


def test_a_region_for_every_scan_of_the_subject_has_no_scan(browser_client, imaging_a, quantified):
    response = browser_client(imaging_a).post(
        f"/scans/{quantified.pk}/region/", _region(name="liver box", kind="liver", scope="subject")
    )
    assert response.status_code == 201, response.content
    assert RegionOfInterest.objects.get(name="liver box").scan_id is None


@pytest.mark.parametrize(
    "data,status,code",
    [
        (_region(name="", kind="target"), 400, "invalid"),
        (_region(h1=12, name="x", kind="target"), 400, "invalid_region"),
        (_region(h0="a", name="x", kind="target"), 400, "invalid_region"),
        ({**_region(name="x", kind="target"), "plane": "mip"}, 400, "invalid_region"),
        (_region(name="x", kind="bone"), 400, "invalid_kind"),
    ],
)
def test_a_wrong_region_is_refused_and_nothing_written(
    browser_client, imaging_a, quantified, nothing_written, data, status, code
):
    client = browser_client(imaging_a)
    before = RegionOfInterest.objects.count()
    with nothing_written():
        response = client.post(f"/scans/{quantified.pk}/region/", data)
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert RegionOfInterest.objects.count() == before


def test_a_role_that_may_not_define_regions_may_measure_but_not_save(
    browser_client, monitor, quantified, nothing_written
):
    client = browser_client(monitor)
    assert client.get(f"/scans/{quantified.pk}/region/", _region()).status_code == 200
    before = RegionOfInterest.objects.count()
    with nothing_written():
        response = client.post(f"/scans/{quantified.pk}/region/", _region(name="x", kind="target"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert RegionOfInterest.objects.count() == before
    page = client.get(f"/scans/{quantified.pk}/").content.decode()
    assert 'id="viewer-tools"' in page and "Save as region of interest" not in page


def test_it_validates_ownership(browser_client, coordinator_b, quantified):
    client = browser_client(coordinator_b)
    before = RegionOfInterest.objects.count()
    for url in (f"/scans/{quantified.pk}/values/axial/0.json", f"/scans/{quantified.pk}/region/?plane=axial"):
        assert client.get(url).status_code == 404, url
    response = client.post(f"/scans/{quantified.pk}/region/", _region(name="x", kind="target"))
    assert response.status_code == 404
    assert RegionOfInterest.objects.count() == before


def test_a_sponsor_gets_404(browser_client, sponsor, quantified):
    client = browser_client(sponsor)
    assert client.get(f"/scans/{quantified.pk}/values/axial/0.json").status_code == 404
    assert client.get(f"/scans/{quantified.pk}/region/", _region()).status_code == 404
    assert client.post(f"/scans/{quantified.pk}/region/", _region(name="x", kind="target")).status_code == 404


def test_the_scan_page_offers_the_subject_s_other_time_points(
    api, browser_client, imaging_a, pipeline, quantified, simulate
):
    from tests.imaging.helpers import process, uploaded_scan

    # Another acquisition (more frames: another file) of the same phantom, two days later.
    later = process(uploaded_scan(api, pipeline, simulate(1, frames=12)["measurement"], hours=48.0))
    assert later.status == "quantified", later.status_reason
    page = browser_client(imaging_a).get(f"/scans/{quantified.pk}/").content.decode()
    assert f'<option value="{later.pk}">Scan #{later.pk} · 48 h</option>' in page
    assert f'<option value="{quantified.pk}">' not in page  # not itself
    assert "viewer-tools.js" in page and "Save as region of interest" in page
    data = json.loads(browser_client(imaging_a).get(f"/scans/{later.pk}/values/axial/0.json").content)
    assert data["hours"] == 48.0
