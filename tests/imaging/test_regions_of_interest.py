"""Regions of interest: geometry or label volume, per subject or per scan, site-scoped."""

from __future__ import annotations

import io

import numpy as np

from audit.actions import AuditAction
from imaging.models import Measurement, RegionOfInterest
from tests.conftest import last_event
from tests.imaging.helpers import process, uploaded_scan


def test_it_defines_a_region_from_geometry_and_audits_it(api, pipeline):
    response = api(pipeline.user).post(
        "/api/v1/rois/",
        {
            "subject": pipeline.subject.pk,
            "name": "spleen",
            "kind": "spleen",
            "geometry": {"shape": "sphere", "center_m": [0.006, -0.008, 0], "radius_m": 0.002},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    roi = RegionOfInterest.objects.get(pk=response.json()["id"])
    assert roi.geometry == {"shape": "sphere", "center_m": [0.006, -0.008, 0.0], "radius_m": [0.002] * 3}
    assert last_event().action == AuditAction.ROI_DEFINED


def test_it_refuses_bad_geometry_and_writes_nothing(api, pipeline, nothing_changed):
    with nothing_changed():
        response = api(pipeline.user).post(
            "/api/v1/rois/",
            {
                "subject": pipeline.subject.pk,
                "name": "x",
                "kind": "other",
                "geometry": {"shape": "cone", "center_m": [0, 0, 0]},
            },
            format="json",
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_geometry"


def test_it_uses_a_scans_own_label_volume_regions_instead_of_the_subjects(api, pipeline):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    labels = np.zeros((12, 12, 1), dtype=np.int32)
    labels[4:8, 7:11, 0] = 1  # around the heart (x 4..7, y 7..10 on the 2 mm grid)
    buffer = io.BytesIO()
    np.save(buffer, labels)
    buffer.seek(0)
    buffer.name = "labels.npy"
    response = api(pipeline.user).post(
        "/api/v1/rois/",
        {
            "subject": pipeline.subject.pk,
            "scan": scan.pk,
            "name": "heart (drawn)",
            "kind": "target",
            "label_volume": buffer,
            "label_value": 1,
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    process(scan)
    assert list(Measurement.objects.filter(scan=scan).values_list("roi_name", flat=True)) == ["heart (drawn)"]
    assert Measurement.objects.get(scan=scan).voxels == 16


def test_it_hides_regions_of_another_site(api, pipeline, coordinator_b):
    roi = RegionOfInterest.objects.filter(subject=pipeline.subject).first()
    assert api(coordinator_b).get(f"/api/v1/rois/{roi.pk}/").status_code == 404
    assert api(coordinator_b).get("/api/v1/rois/").json()["count"] == 0
    response = api(coordinator_b).post(
        "/api/v1/rois/",
        {
            "subject": pipeline.subject.pk,
            "name": "x",
            "kind": "other",
            "geometry": {"shape": "sphere", "center_m": [0, 0, 0], "radius_m": 0.001},
        },
        format="json",
    )
    assert response.status_code == 404
