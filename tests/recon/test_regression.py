"""Acceptance: iron per ROI on simulated 2D and 3D mice, and image SSIM.

The scans are simulated on a grid three times finer per axis than the system
matrix (sub-voxel integration), with receiver noise, a drifting scanner
background and empty-bore frames, so the reconstruction never inverts the
exact model.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from recon.params import ReconParams
from recon.pipeline import reconstruct_file
from recon.quantify import quantify_file
from recon.simulate import simulate_to_files

TARGET_TOL = 0.10  # issue acceptance: target ROI within 10 % of the truth
OFF_TARGET_TOL = 0.15  # off-target ROIs within 15 %
# SSIM of the mean reconstructed image against the ground truth on the same
# grid (data range = truth maximum). Measured 0.949 (2D) and 0.957 (3D) when
# written; the limits leave a 0.03 margin for BLAS/platform rounding.
SSIM_LIMIT = {2: 0.92, 3: 0.92}
# 3D: coarser resolution (few harmonics on the short-frame test scanner), so a
# weaker regulariser; frames are averaged in blocks of 4 to keep the test fast.
PARAMS = {2: ReconParams(), 3: ReconParams(lambda_=1e-4, average=4)}


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def reconstructed(request, tmp_path_factory):
    dims = request.param
    out = tmp_path_factory.mktemp(f"mouse{dims}d")
    sim = simulate_to_files(out, dims=dims, phantom="mouse", seed=2024, frames=16)
    result = reconstruct_file(sim["system_matrix"], sim["measurement"], out / "recon.mdf", PARAMS[dims])
    quant = quantify_file(
        out / "recon.mdf",
        sim["rois"],
        injected_iron_ng=sim["injected_iron_ng"],
        system_matrix_path=sim["system_matrix"],
    )
    return dims, sim, result, quant


def test_it_quantifies_every_roi_within_tolerance(reconstructed):
    dims, sim, _, quant = reconstructed
    for roi in quant.rois:
        truth = sim["truth"][roi.name]
        tol = TARGET_TOL if roi.kind == "target" else OFF_TARGET_TOL
        rel = (roi.iron_mass_ng - truth) / truth
        assert abs(rel) < tol, f"{dims}D {roi.name}: {roi.iron_mass_ng:.1f} ng vs {truth:.1f} ng ({100 * rel:+.1f} %)"
        assert roi.detected


def test_it_reports_retention_and_off_target_fractions(reconstructed):
    _, sim, _, quant = reconstructed
    truth_retention = 100 * sim["truth"]["heart"] / sim["injected_iron_ng"]
    assert quant.retention_percent == pytest.approx(truth_retention, abs=100 * TARGET_TOL * truth_retention / 100)
    truth_off = 100 - truth_retention
    assert quant.off_target_percent == pytest.approx(truth_off, rel=OFF_TARGET_TOL)


def test_it_matches_the_ground_truth_image_by_ssim(reconstructed):
    dims, sim, result, _ = reconstructed
    truth = np.load(sim["truth_image"]).reshape(result.size, order="F")
    image = result.concentration_mol_per_l.mean(axis=0).reshape(result.size, order="F").astype(np.float64)
    if dims == 2:
        truth, image = truth[:, :, 0], image[:, :, 0]
    ssim = structural_similarity(truth, image, data_range=float(truth.max()))
    assert ssim > SSIM_LIMIT[dims], f"{dims}D SSIM {ssim:.3f}"


@pytest.mark.parametrize("reconstructed", [2], ids=["2d"], indirect=True)
def test_it_needs_background_correction(reconstructed):
    """Without background correction the image holds the scanner background: an estimator
    without the background-spectrum columns is off (the test would catch a no-op), while
    the full estimator fits the background spectrum jointly and still recovers the iron."""
    from recon.mdf import MDFFile
    from recon.quantify import exact_spread, quantify_reconstruction, read_reconstruction, rois_for_quantification

    _, sim, _, _ = reconstructed
    out = sim["measurement"].replace("measurement.mdf", "nobg.mdf")
    reconstruct_file(sim["system_matrix"], sim["measurement"], out, ReconParams(background="none"))
    with MDFFile(out) as f:
        stored = read_reconstruction(f)
    rois = rois_for_quantification(json.loads(Path(sim["rois"]).read_text())["rois"], stored.grid)
    spread, bg_columns = exact_spread(stored, rois, sim["system_matrix"])
    assert bg_columns is not None
    without = quantify_reconstruction(stored, rois, spread=spread)
    errors = [abs(r.iron_mass_ng / sim["truth"][r.name] - 1) for r in without.rois]
    assert max(errors) > OFF_TARGET_TOL
    full = quantify_reconstruction(stored, rois, spread=spread, background_columns=bg_columns)
    for r in full.rois:
        assert abs(r.iron_mass_ng / sim["truth"][r.name] - 1) < OFF_TARGET_TOL, r.name


@pytest.mark.parametrize("reconstructed", [2], ids=["2d"], indirect=True)
def test_it_quantifies_within_tolerance_with_whitened_rows(reconstructed):
    _, sim, _, _ = reconstructed
    out = sim["measurement"].replace("measurement.mdf", "whitened.mdf")
    reconstruct_file(sim["system_matrix"], sim["measurement"], out, ReconParams(weighting="whiten"))
    for roi in quantify_file(out, sim["rois"], system_matrix_path=sim["system_matrix"]).rois:
        tol = TARGET_TOL if roi.kind == "target" else OFF_TARGET_TOL
        assert abs(roi.iron_mass_ng / sim["truth"][roi.name] - 1) < tol, roi.name
