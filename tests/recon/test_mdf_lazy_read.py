"""Selecting rows of a large fast-frame-axis system matrix reads only those rows."""

import time
import tracemalloc

import h5py
import numpy as np

from recon.mdf import MDFFile, write_mdf
from tests.recon.test_mdf_factories import acquisition_fields, calibration_fields

# 1 channel x 2000 frequencies x 12,500 positions of complex64 = 200 MB on disk
K_STORED, SIZE = 2000, (125, 100, 1)
O = 125 * 100
# peak Python allocations while reading, relative to the returned complex128 rows
MAX_PEAK_OVER_RESULT = 3.0


def test_it_reads_selected_rows_with_bounded_memory(tmp_path):
    path = tmp_path / "big.mdf"
    V = 2 * (K_STORED - 1)
    data = np.empty((1, 1, K_STORED, O), dtype=np.complex64)
    # rows carry their own index so the test can tell which rows came back
    data.real = np.arange(K_STORED, dtype=np.float32)[None, None, :, None]
    data.imag = np.arange(O, dtype=np.float32)[None, None, None, :]
    fields = acquisition_fields(O, 1, 1, V)
    fields.update(calibration_fields(SIZE, 0))
    fields.update(
        {
            "/measurement/data": data,
            "/measurement/isFourierTransformed": True,
            "/measurement/isFastFrameAxis": True,
            "/measurement/isFrequencySelection": False,
            "/measurement/isFramePermutation": False,
            "/measurement/isBackgroundCorrected": False,
            "/measurement/isTransferFunctionCorrected": False,
            "/measurement/isSparsityTransformed": False,
            "/measurement/isBackgroundFrame": np.zeros(O, dtype=bool),
        }
    )
    write_mdf(path, fields)
    del data, fields
    with h5py.File(path, "r") as h5:
        chunks = h5["/measurement/data"].chunks
    assert chunks is not None and chunks[3] == O and chunks[2] < 64, chunks  # whole rows per chunk

    rows = np.sort(np.random.default_rng(0).choice(K_STORED, size=200, replace=False))
    start = time.perf_counter()
    with MDFFile(path) as f:
        tracemalloc.start()
        S, B = f.system_matrix(frequencies=rows)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed = time.perf_counter() - start

    assert S.shape == (1, 200, O) and B.shape == (1, 200, 0)
    np.testing.assert_array_equal(S[0, :, 0].real, rows)
    np.testing.assert_array_equal(S[0, 5].imag, np.arange(O))
    # the whole matrix as complex128 would be 400 MB; the selection is 40 MB
    assert peak < MAX_PEAK_OVER_RESULT * S.nbytes, (peak / 2**20, S.nbytes / 2**20)
    assert elapsed < 10, elapsed
