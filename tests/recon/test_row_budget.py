"""The default row budget: derived from memory and voxels, respected by the pipeline, stated in its output;
the fast solver's operator is cached next to nothing else than its key."""

import numpy as np
import pytest

from recon.budget import SMALL_MATRIX_BYTES, row_budget
from recon.params import ReconParams
from recon.pipeline import reconstruct_file
from recon.simulate import simulate_to_files

GIB = 2**30


def test_it_caps_rows_by_memory():
    b = row_budget(50_653, memory_budget_bytes=2 * GIB)
    assert b.by_memory == 2 * GIB // (16 * 50_653)  # twice the float32 stacked pair per complex row
    assert b.max_rows == b.by_memory and b.source == "default budget"
    assert 2 * b.float32_matrix_bytes_at_cap <= 2 * GIB


def test_it_caps_rows_by_voxels_so_the_gram_fits_beside_the_matrix():
    b = row_budget(19**3, available=(64 * GIB, "test"))
    assert b.max_rows == b.by_voxels == 19**3 // 4
    m, p = b.max_rows, 19**3
    assert 32 * m * m <= 8 * p * m  # float64 row Gram ≤ float32 matrix


def test_it_leaves_small_problems_uncapped_by_voxels():
    b = row_budget(400, available=(64 * GIB, "test"))
    assert b.by_voxels == SMALL_MATRIX_BYTES // (8 * 400)


def test_the_plans_max_rows_wins():
    b = row_budget(19**3, max_rows=7, available=(GIB, "test"))
    assert b.max_rows == 7 and b.source == "plan max_rows"


def test_it_refuses_a_bad_budget():
    with pytest.raises(ValueError, match="memory_budget_bytes must be None or an integer >= 1"):
        ReconParams(memory_budget_bytes=0)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_to_files(
        tmp_path_factory.mktemp("budget"), dims=2, frames=6, seed=5, fast=True, grid=(12, 12, 1), empty_bore_frames=4
    )


def test_the_pipeline_respects_the_budget_and_states_it(sim, tmp_path):
    # 144 voxels: 16 · 144 B per row, so a 40 KiB budget allows 17 rows.
    params = ReconParams(memory_budget_bytes=40 * 1024, iterations=2)
    result = reconstruct_file(sim["system_matrix"], sim["measurement"], tmp_path / "o.mdf", params)
    budget = result.selection["budget"]
    assert budget["max_rows"] == 40 * 1024 // (16 * 144) == 17
    assert result.selection["num_rows"] == 17 < result.selection["candidates"]
    assert result.parameters_record()["selection"]["budget"]["budget_bytes"] == 40 * 1024
    # the kept rows are the 17 highest-SNR candidates
    unbudgeted = reconstruct_file(sim["system_matrix"], sim["measurement"], None, params.replace(max_rows=17))
    assert unbudgeted.selection["frequency_index"] == result.selection["frequency_index"]


def test_the_fast_solver_builds_once_then_loads_its_operator(sim, tmp_path):
    cache = tmp_path / "ops"
    params = ReconParams(solver="fast", lambda_=3e-3)
    first = reconstruct_file(sim["system_matrix"], sim["measurement"], None, params, operator_cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 1
    assert any("built and cached" in n for n in first.notes)
    second = reconstruct_file(sim["system_matrix"], sim["measurement"], None, params, operator_cache_dir=cache)
    assert any("loaded from cache" in n for n in second.notes)
    np.testing.assert_array_equal(second.concentration_mol_per_l, first.concentration_mol_per_l)
    uncached = reconstruct_file(sim["system_matrix"], sim["measurement"], None, params)
    np.testing.assert_allclose(uncached.concentration_mol_per_l, first.concentration_mol_per_l, rtol=0, atol=0)
    # another λ is another operator
    reconstruct_file(
        sim["system_matrix"], sim["measurement"], None, params.replace(lambda_=1e-2), operator_cache_dir=cache
    )
    assert len(list(cache.glob("*.npy"))) == 2


def test_without_a_stored_snr_it_computes_the_same_snr_block_by_block(sim, tmp_path, monkeypatch):
    import shutil

    import h5py

    from recon import pipeline
    from recon.mdf import MDFFile
    from recon.simulate import calibration_snr

    cal = tmp_path / "cal.mdf"
    shutil.copy(sim["system_matrix"], cal)
    with h5py.File(cal, "r+") as h5:
        del h5["/calibration/snr"]
    with MDFFile(cal) as f:
        whole = calibration_snr(*f.system_matrix())
        monkeypatch.setattr(pipeline, "ROW_BLOCK_BYTES", 16 * 2 * 144 * 7)  # 2 channels: 7 frequencies per block
        blocked = pipeline._calibration_snr_in_blocks(f, 144)
    np.testing.assert_allclose(blocked, whole, rtol=1e-12)
    result = reconstruct_file(cal, sim["measurement"], None, ReconParams(iterations=2))
    assert "calibration SNR computed from its background frames" in result.notes
