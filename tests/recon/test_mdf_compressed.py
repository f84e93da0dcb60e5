"""Compressed (sparsity-transformed, MDF v2.1) system matrices decompress to the full grid."""

import numpy as np
import pytest
import scipy.fft

from recon.mdf import MDFError, MDFFile, write_mdf
from tests.recon.test_mdf_factories import acquisition_fields, calibration_fields

SIZE = (16, 12, 1)  # x, y, z; the length-1 z axis is left out of the transform
GRID = (SIZE[2], SIZE[1], SIZE[0])  # numpy order, x fastest
O = int(np.prod(SIZE))
C, K, E = 2, 7, 2
V = 2 * (K - 1)
# keeping a quarter of the DCT coefficients of these smooth rows leaves less than this relative error
SMOOTH_ROW_TOLERANCE = 0.02


def smooth_matrix(size=SIZE) -> np.ndarray:
    """(C, K, O) complex rows: Gaussian blobs that move with the row, like MPI system functions."""
    grid = size[::-1]
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in grid), indexing="ij")
    rows = np.empty((C, K, int(np.prod(size))), dtype=np.complex128)
    for c in range(C):
        for k in range(K):
            cx, cy = 0.4 * np.cos(k + c), 0.4 * np.sin(k)
            blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.5)
            rows[c, k] = (blob * (1 + 0.5j * k) * (c + 1)).ravel()
    return rows


def compress(rows: np.ndarray, n_keep: int, dct_type: int, one_based: bool, size=SIZE) -> tuple[dict, np.ndarray]:
    """Keep the n_keep largest DCT coefficients per row, as MPIFiles.jl does."""
    grid = size[::-1]
    axes = tuple(1 + a for a, n in enumerate(grid) if n > 1)
    coef = scipy.fft.dctn(rows.reshape((-1,) + grid), type=dct_type, axes=axes, norm="ortho").reshape(rows.shape)
    order = np.argsort(-np.abs(coef), axis=-1, kind="stable")[..., :n_keep]
    kept = np.take_along_axis(coef, order, axis=-1)
    rng = np.random.default_rng(0)
    background = rng.standard_normal((C, K, E)) + 1j * rng.standard_normal((C, K, E))
    data = np.concatenate([kept, background], axis=-1)[np.newaxis]  # J x C x K x (B + E)
    fields = acquisition_fields(n_keep + E, 1, C, V)
    fields.update(calibration_fields(size, E))
    fields.update(
        {
            "/measurement/data": data.astype(np.complex128),
            "/measurement/isFourierTransformed": True,
            "/measurement/isFastFrameAxis": True,
            "/measurement/isSparsityTransformed": True,
            "/measurement/sparsityTransformation": {1: "DCT-I", 2: "DCT-II", 3: "DCT-III", 4: "DCT-IV"}[dct_type],
            "/measurement/subsamplingIndices": (order + (1 if one_based else 0))[np.newaxis].astype(np.int32),
            "/measurement/isFrequencySelection": False,
            "/measurement/isFramePermutation": False,
            "/measurement/isBackgroundCorrected": False,
            "/measurement/isTransferFunctionCorrected": False,
            "/measurement/isBackgroundFrame": np.r_[np.zeros(n_keep, bool), np.ones(E, bool)],
        }
    )
    return fields, background


@pytest.mark.parametrize("dct_type", [1, 2, 3, 4])
@pytest.mark.parametrize("one_based", [True, False])
def test_it_decompresses_exactly_when_all_coefficients_are_kept(tmp_path, dct_type, one_based):
    rows = smooth_matrix()
    fields, background = compress(rows, O, dct_type, one_based)
    path = tmp_path / "full.mdf"
    write_mdf(path, fields)
    with MDFFile(path) as f:
        S, B = f.system_matrix()
    assert S.shape == (C, K, O) and B.shape == (C, K, E)
    np.testing.assert_allclose(S, rows, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(B, background, rtol=1e-12)


@pytest.mark.parametrize("dct_type", [1, 2, 4])
def test_it_decompresses_a_3d_grid_in_x_fastest_order(tmp_path, dct_type):
    size = (5, 4, 3)
    rows = smooth_matrix(size)
    fields, _ = compress(rows, int(np.prod(size)), dct_type, one_based=True, size=size)
    path = tmp_path / "3d.mdf"
    write_mdf(path, fields)
    with MDFFile(path) as f:
        S, _ = f.system_matrix(frequencies=[2, 5])
    np.testing.assert_allclose(S, rows[:, [2, 5]], rtol=1e-10, atol=1e-12)


def test_it_approximates_smooth_rows_from_a_quarter_of_the_coefficients(tmp_path):
    rows = smooth_matrix()
    fields, _ = compress(rows, O // 4, 2, one_based=True)
    path = tmp_path / "quarter.mdf"
    write_mdf(path, fields)
    with MDFFile(path) as f:
        S, _ = f.system_matrix(frequencies=[6, 0, 3], channels=[1])
    expected = rows[[1]][:, [6, 0, 3]]
    rel = np.linalg.norm(S - expected, axis=-1) / np.linalg.norm(expected, axis=-1)
    assert rel.max() < SMOOTH_ROW_TOLERANCE, rel


def test_it_refuses_frame_spectra_of_a_compressed_matrix(tmp_path):
    fields, _ = compress(smooth_matrix(), 10, 2, one_based=True)
    path = tmp_path / "c.mdf"
    write_mdf(path, fields)
    with MDFFile(path) as f, pytest.raises(MDFError, match="use system_matrix"):
        f.spectra()
