"""The platform's stored metrics come from the same estimator as ``python -m recon quantify``:
the pipeline's quantify step on its stored reconstruction and the CLI on the same file and
the same calibration give the very same numbers (issue #14)."""

from __future__ import annotations

import json

import pytest

from imaging import uploads
from imaging.models import Measurement
from recon import cli
from tests.imaging.helpers import process, uploaded_scan


def test_it_stores_the_numbers_the_cli_prints(api, pipeline, capsys):
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    reconstruction = scan.reconstructions.get()
    stored = {m.roi_name: m for m in Measurement.objects.filter(scan=scan)}
    assert len(stored) == 4
    capsys.readouterr()
    code = cli.main(
        [
            "quantify",
            "--reconstruction",
            str(uploads.media_path(reconstruction.file)),
            "--rois",
            pipeline.sim["rois"],
            "--system-matrix",
            str(uploads.media_path(reconstruction.system_matrix.file)),
            "--injected-iron-ng",
            repr(scan.metrics_summary["injected_iron_ng"]),
            "--pg-fe-per-cell",
            repr(float(pipeline.batch.iron_per_cell_pg)),
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    for roi in printed["rois"]:
        m = stored[roi["name"]]
        assert (m.iron_ng, m.uncertainty_ng, m.detection_limit_ng, m.detected, m.cell_count) == (
            roi["iron_mass_ng"],
            roi["uncertainty_ng"],
            roi["detection_limit_ng"],
            roi["detected"],
            roi["cell_count"],
        )
        assert m.retention_percent == pytest.approx(roi["retention_percent"], rel=1e-12)
    assert scan.metrics_summary["retention_percent"] == pytest.approx(printed["retention_percent"], rel=1e-12)
    assert any("spread from the reconstruction operator" in n for n in printed["notes"])
