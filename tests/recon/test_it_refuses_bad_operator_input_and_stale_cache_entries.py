"""ReconOperator: refusals on build and on region weights, atomic cache writes,
stale cache records treated as misses, and per-frame region functionals."""

import json

import numpy as np
import pytest

from recon import operator as op_mod
from recon.operator import ReconOperator

KEY = "ab" * 32
# Region functionals are float32: agreement with the float64 image sums to this.
FUNCTIONAL_TOL = 1e-4


def _rows(rows=12, voxels=8, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, voxels))


@pytest.mark.parametrize(
    "a, shown",
    [
        (np.ones(5), r"float64 \(5,\)"),
        (np.ones((3, 4), dtype=np.complex64), r"complex64 \(3, 4\)"),
        (np.ones((0, 4)), r"float64 \(0, 4\)"),
        (np.ones((3, 4), dtype=np.int32), r"int32 \(3, 4\)"),
    ],
)
def test_it_refuses_a_matrix_that_is_not_real_2d_and_non_empty(a, shown):
    with pytest.raises(
        ValueError, match=r"needs a non-empty real 2-D float32/float64 matrix \(rows, voxels\), got " + shown
    ):
        ReconOperator.build(a, 0.1)


def test_it_refuses_nan_in_the_system_matrix():
    a = _rows()
    a[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"system matrix \(12, 8\) contains NaN or inf"):
        ReconOperator.build(a, 0.1)


def test_it_refuses_to_overwrite_a_non_contiguous_or_read_only_matrix():
    a = np.asfortranarray(_rows())
    with pytest.raises(ValueError, match="overwrite_a needs a writeable C-contiguous matrix"):
        ReconOperator.build(a, 0.1, overwrite_a=True)
    b = _rows()
    b.flags.writeable = False
    with pytest.raises(ValueError, match="overwrite_a needs a writeable C-contiguous matrix"):
        ReconOperator.build(b, 0.1, overwrite_a=True)
    np.testing.assert_array_equal(b, _rows())  # untouched


def test_it_refuses_non_finite_weights_or_scale():
    op = ReconOperator.build(_rows(), 0.1)
    w = np.ones(8)
    w[1] = np.inf
    with pytest.raises(ValueError, match="weights and scale must be finite"):
        op.region_functionals(w)
    with pytest.raises(ValueError, match="weights and scale must be finite"):
        op.region_functionals(np.ones(8), scale=float("nan"))


def test_one_region_vector_gives_one_functional_per_frame_and_single_frames_work():
    a = _rows()
    op = ReconOperator.build(a, 0.1)
    w = np.linspace(0.0, 1.0, 8)
    fn = op.region_functionals(w, scale=2.5)
    assert fn.num_regions == 1
    y = np.random.default_rng(3).standard_normal((4, 12))
    expected = 2.5 * op.apply(y) @ w
    np.testing.assert_allclose(fn.apply(y)[:, 0], expected, rtol=FUNCTIONAL_TOL, atol=FUNCTIONAL_TOL)
    single = fn.apply(y[2])
    assert single.shape == (1,)
    np.testing.assert_allclose(single[0], expected[2], rtol=FUNCTIONAL_TOL, atol=FUNCTIONAL_TOL)
    with pytest.raises(ValueError, match=r"frames have shape \(4, 11\), expected \(F, 12\) or \(12,\)"):
        fn.apply(y[:, :11])


def test_a_failed_cache_write_leaves_no_file_behind(tmp_path, monkeypatch):
    op = ReconOperator.build(_rows(), 0.1)

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(op_mod.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        op.save(tmp_path / "cache", KEY)
    assert list((tmp_path / "cache").iterdir()) == []
    assert op.key is None


@pytest.mark.parametrize(
    "change",
    [
        {"format": op_mod.CACHE_FORMAT + 1},
        {"key": "cd" * 32},
        {"dtype": "float32"},
        {"shape": [8, 12]},
    ],
)
def test_a_cache_record_that_does_not_match_its_matrix_is_a_miss(tmp_path, change):
    op = ReconOperator.build(_rows(), 0.1)
    op.save(tmp_path, KEY)
    assert ReconOperator.load(tmp_path, KEY) is not None
    meta_path = tmp_path / f"{KEY}.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.update(change)
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    assert ReconOperator.load(tmp_path, KEY) is None


@pytest.mark.parametrize("key", ["AB" * 32, "ab" * 31, "zz" * 32, 123])
def test_it_refuses_a_cache_key_that_is_not_a_sha256(tmp_path, key):
    with pytest.raises(ValueError, match="cache key must be 64 lowercase hex digits"):
        ReconOperator.load(tmp_path, key)
