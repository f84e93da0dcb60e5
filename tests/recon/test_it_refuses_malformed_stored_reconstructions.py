"""Quantifying a stored reconstruction (``quantify_file``): malformed files and ROI
files are refused with a message naming the file and the field; a well-formed file
is quantified frame by frame or as the mean of its frames."""

import json
import re

import numpy as np
import pytest

from recon import quantify as qf
from recon.mdf import write_reconstruction

SIZE = (8, 8, 1)
FOV = (8e-3, 8e-3, 1e-3)
GRID = qf.Grid(SIZE, FOV)
P = GRID.num_voxels
TARGET = {"name": "t", "kind": "target", "shape": "box", "center_m": [-2e-3, 0, 0], "half_size_m": [1e-3, 1e-3, 5e-4]}
LIVER = {"name": "l", "kind": "liver", "shape": "box", "center_m": [2e-3, 0, 0], "half_size_m": [1e-3, 1e-3, 5e-4]}
#: ng Fe in one voxel at 1 mol/L
NG_PER_MOL_L = GRID.voxel_volume_l * 55.845e9
#: The file stores float32.
FLOAT32_REL = 1e-6


def _frames(levels=(1e-3, 2e-3, 3e-3)):
    """One frame per level: the target box (4 whole voxels) at that level, the liver at half."""
    target = qf.mask_from_record(GRID, TARGET)
    liver = qf.mask_from_record(GRID, LIVER)
    assert target.sum() == 4 and liver.sum() == 4
    return np.stack([lvl * target + 0.5 * lvl * liver for lvl in levels])


def _write(tmp_path, *, parameters=None, unit="mol/L", extra=None, rois=(TARGET, LIVER), rois_json=None):
    path = tmp_path / "r.mdf"
    frames = _frames()
    write_reconstruction(
        path,
        frames,
        size=SIZE,
        field_of_view_m=FOV,
        field_of_view_center_m=(0, 0, 0),
        parameters={"resolution_fwhm_m": [0.0, 0.0, 0.0]} if parameters is None else parameters,
        unit=unit,
        extra_fields={qf.LINEAR_FRAMES_FIELD: frames.astype(np.float32)} | (extra or {}),
    )
    rois_path = tmp_path / "rois.json"
    rois_path.write_text(json.dumps({"rois": list(rois)} if rois_json is None else rois_json))
    return path, rois_path


def test_it_quantifies_one_stored_frame_or_the_mean_of_all(tmp_path):
    path, rois = _write(tmp_path)
    one = qf.quantify_file(path, rois, frame=-1, background="none")
    assert one.roi("t").iron_mass_ng == pytest.approx(3e-3 * 4 * NG_PER_MOL_L, rel=FLOAT32_REL)
    assert one.roi("l").iron_mass_ng == pytest.approx(1.5e-3 * 4 * NG_PER_MOL_L, rel=FLOAT32_REL)
    mean = qf.quantify_file(path, rois, background="none", injected_iron_ng=1000.0)
    assert mean.roi("t").iron_mass_ng == pytest.approx(2e-3 * 4 * NG_PER_MOL_L, rel=FLOAT32_REL)
    assert mean.retention_percent == pytest.approx(100 * 2e-3 * 4 * NG_PER_MOL_L / 1000.0, rel=FLOAT32_REL)
    record = mean.as_dict()
    assert [r["name"] for r in record["rois"]] == ["t", "l"]
    assert record["rois"][0]["iron_mass_ng"] == mean.roi("t").iron_mass_ng
    assert json.loads(json.dumps(record))["notes"] == list(mean.notes)
    with pytest.raises(KeyError, match=re.escape("no ROI named 'spleen'; have ['t', 'l']")):
        mean.roi("spleen")


@pytest.mark.parametrize("frame", [3, -4])
def test_it_refuses_a_frame_the_file_does_not_hold(tmp_path, frame):
    path, rois = _write(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"frame {frame} out of range for 3 reconstructed frames")):
        qf.quantify_file(path, rois, frame=frame)


def test_it_notes_that_retention_needs_a_target_roi(tmp_path):
    path, rois = _write(tmp_path, rois=(LIVER,))
    result = qf.quantify_file(path, rois, background="none", injected_iron_ng=1000.0)
    assert result.retention_percent is None and result.retention_uncertainty_percent is None
    assert "no target ROI: retention not computed" in result.notes
    assert result.roi("l").off_target_percent == pytest.approx(100.0)


def test_it_refuses_a_reconstruction_in_another_unit(tmp_path):
    path, rois = _write(tmp_path, unit="ng/voxel")
    with pytest.raises(ValueError, match=re.escape(f"{path}: unit 'ng/voxel', expected 'mol/L'")):
        qf.quantify_file(path, rois)


def test_it_refuses_linear_frames_that_do_not_fit_the_grid(tmp_path):
    path, rois = _write(tmp_path, extra={qf.LINEAR_FRAMES_FIELD: np.zeros((3, P - 1), np.float32)})
    message = f"{path}: {qf.LINEAR_FRAMES_FIELD} has shape (3, {P - 1}), expected (Q, {P})"
    with pytest.raises(ValueError, match=re.escape(message)):
        qf.quantify_file(path, rois)


@pytest.mark.parametrize("fwhm", [[1e-3, 1e-3], [1e-3, -1e-3, 0.0], [1e-3, None, 0.0]])
def test_it_refuses_a_recorded_resolution_that_is_not_three_lengths(tmp_path, fwhm):
    path, rois = _write(tmp_path, parameters={"resolution_fwhm_m": fwhm})
    with pytest.raises(ValueError, match=re.escape(f"{path}: resolution_fwhm_m must be 3 numbers >= 0 (m), got")):
        qf.quantify_file(path, rois)


def test_it_reads_the_stored_background_spectrum_and_refuses_one_of_the_wrong_shape(tmp_path):
    bg = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    path, _ = _write(tmp_path, extra={qf.BACKGROUND_ROWS_FIELD: bg})
    from recon.mdf import MDFFile

    with MDFFile(path) as f:
        stored = qf.read_reconstruction(f)
    np.testing.assert_array_equal(stored.background_rows, [1 + 0.5j, 2 + 0j, 3 - 1j])
    assert stored.linear and stored.resolution_fwhm_m == (0.0, 0.0, 0.0)

    (tmp_path / "bad").mkdir()
    path, rois = _write(tmp_path / "bad", extra={qf.BACKGROUND_ROWS_FIELD: np.zeros((3, 4))})
    with pytest.raises(
        ValueError, match=re.escape(f"{path}: {qf.BACKGROUND_ROWS_FIELD} has shape (3, 4), expected (2, M)")
    ):
        qf.quantify_file(path, rois)


@pytest.mark.parametrize("content", [{"rois": {"name": "t"}}, "target"])
def test_it_refuses_a_rois_file_that_is_not_a_list(tmp_path, content):
    path, rois = _write(tmp_path, rois_json=content)
    kind = type(content["rois"] if isinstance(content, dict) else content).__name__
    with pytest.raises(ValueError, match=re.escape(f"{rois}: expected a list of ROIs, got {kind}")):
        qf.quantify_file(path, rois)


def test_it_quantifies_a_file_without_linear_frames_or_resolution_and_says_so(tmp_path):
    path = tmp_path / "plain.mdf"
    one_voxel = GRID.voxel_size_m * [1, 1, 0]
    blurred = np.stack([qf.gaussian_spread(f, GRID, one_voxel) for f in _frames()])
    write_reconstruction(path, blurred, size=SIZE, field_of_view_m=FOV, field_of_view_center_m=(0, 0, 0), parameters={})
    rois = tmp_path / "rois.json"
    rois.write_text(json.dumps([TARGET, LIVER]))
    result = qf.quantify_file(path, rois, frame=0, background="none")
    assert result.notes[:2] == (
        "file has no linear frames: quantified /reconstruction/data (may be clamped)",
        "file records no resolution: one voxel assumed",
    )
    assert result.resolution_fwhm_m == pytest.approx((1e-3, 1e-3, 0.0))
    # the image was blurred by exactly the assumed one-voxel resolution: the GTM undoes it
    assert result.roi("t").iron_mass_ng == pytest.approx(1e-3 * 4 * NG_PER_MOL_L, rel=FLOAT32_REL)
    assert result.roi("l").iron_mass_ng == pytest.approx(0.5e-3 * 4 * NG_PER_MOL_L, rel=FLOAT32_REL)
