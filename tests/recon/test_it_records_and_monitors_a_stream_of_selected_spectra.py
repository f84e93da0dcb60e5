"""A stream of selected spectra (mpi-live/1 payload "spectra"): the frames' rfft at the
frequencies the platform asks for (``recon.live.stream_frequency_selection``), complex64.

- the header's frequency_selection is refused with a code of its own for each fault;
- the live engine gives the same region iron from the spectra as from the samples of the
  same frames (within SPECTRA_RTOL of the largest value: the samples path runs its rfft in
  float32, the spectra travel as complex64, both ~1e-7 relative);
- a selection that misses live rows is a system_matrix_mismatch naming how many;
- the recording is a valid frequency-domain MDF (isFourierTransformed, isFrequencySelection,
  1-based frequencySelection) whose spectra are the time-domain recording's at those bins,
  and the offline pipeline (file and array paths) reconstructs it as the samples recording;
- a scan whose stored frequencies miss some of the rows the pipeline would pick: the pipeline
  picks among the stored ones (the intersection), and says so in its notes.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from recon.live import (
    MAX_SELECTED_FREQUENCIES,
    LiveEngine,
    LiveStreamError,
    StreamLayout,
    parse_frequency_selection,
    stream_frequency_selection,
)
from recon.live_simulate import simulate_injection_stream, stream_fields_from_mdf
from recon.mdf import MDFFile
from recon.params import ReconParams
from recon.pipeline import load_arrays, reconstruct_arrays, reconstruct_file
from recon.recording import MDFStreamWriter, RecordingError
from recon.validate import validate

# complex64 spectra vs the engine's float32 rfft of float32 samples: both round at ~6e-8 of
# the largest bin; the region iron agrees far within this fraction of its largest value.
SPECTRA_RTOL = 1e-3
# Offline: the same rows from the same frames; only the stored precision differs (complex64
# spectra of float32 samples vs float64 rfft of the same samples).
OFFLINE_RTOL = 1e-4
PLAN = ReconParams(solver="fast", max_rows=200)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    return simulate_injection_stream(
        tmp_path_factory.mktemp("spectra"), dims=2, num_frames=24, background_frames=(6, 2), seed=7
    )


@pytest.fixture(scope="module")
def frames(simulated):
    with h5py.File(simulated["stream"], "r") as h5:
        data = np.asarray(h5["/measurement/data"])
        background = np.asarray(h5["/measurement/isBackgroundFrame"]).astype(bool)
    return data, background


def spectra_of(data: np.ndarray, selection_1based) -> np.ndarray:
    """What a bridge sends: the rfft of each period's raw samples at the selected bins."""
    bins = np.asarray(selection_1based) - 1
    return np.fft.rfft(data, axis=-1)[..., bins].astype("<c8")


@pytest.mark.parametrize(
    "value, code",
    [
        ([], "bad_frequency_selection"),
        ("1,2,3", "bad_frequency_selection"),
        ([1, 2.5], "bad_frequency_selection"),
        ([1, True], "bad_frequency_selection"),
        ([3, 2], "bad_frequency_selection"),
        ([2, 2], "bad_frequency_selection"),
        ([0, 1], "frequency_out_of_range"),
        ([1, 2, 52], "frequency_out_of_range"),
        (list(range(1, MAX_SELECTED_FREQUENCIES + 2)), "frequency_selection_too_large"),
    ],
)
def test_each_bad_frequency_selection_has_its_code(value, code):
    with pytest.raises(LiveStreamError) as caught:
        parse_frequency_selection(value, 100)  # 51 bins
    assert caught.value.code == code


def test_a_good_selection_is_zero_based_and_the_layout_carries_it(simulated):
    fields = stream_fields_from_mdf(simulated["stream"])
    assert parse_frequency_selection([1, 5, 51], 100).tolist() == [0, 4, 50]
    layout = StreamLayout.from_fields(fields, "complex64", [2, 3, 7])
    v = fields["/acquisition/receiver/numSamplingPoints"]
    assert layout.frequencies == (1, 2, 6) and layout.frame_shape[2] == 3 and layout.samples == v
    assert layout.frame_nbytes == layout.periods * layout.channels * 3 * 8
    with pytest.raises(LiveStreamError, match="complex64"):
        StreamLayout.from_fields(fields, "float32", [2, 3])
    with pytest.raises(LiveStreamError, match="dtype"):
        StreamLayout.from_fields(fields, "complex64")


def test_the_live_engine_gives_the_same_iron_from_spectra_as_from_samples(simulated, frames, tmp_path):
    data, background = frames
    fields = stream_fields_from_mdf(simulated["stream"])
    selection = stream_frequency_selection(simulated["calibration"], params=PLAN)
    assert selection == sorted(set(selection)) and selection[0] >= 1
    samples = LiveEngine.build(
        simulated["calibration"], StreamLayout.from_fields(fields, "float32"), simulated["roi_records"], params=PLAN
    )
    spectra = LiveEngine.build(
        simulated["calibration"],
        StreamLayout.from_fields(fields, "complex64", selection),
        simulated["roi_records"],
        params=PLAN,
    )
    # every frequency the live engine uses is in the selection
    assert set((samples.selection.frequency + 1).tolist()) <= set(selection)
    a = samples.push(data.astype(np.float32), background)
    b = spectra.push(spectra_of(data, selection), background)
    scale = np.nanmax(np.abs(a.iron_ng))
    assert scale > 0
    np.testing.assert_array_equal(np.isnan(a.iron_ng), np.isnan(b.iron_ng))
    np.testing.assert_allclose(b.iron_ng, a.iron_ng, rtol=0, atol=SPECTRA_RTOL * scale)
    np.testing.assert_allclose(b.uncertainty_ng, a.uncertainty_ng, rtol=0, atol=SPECTRA_RTOL * scale)
    np.testing.assert_allclose(spectra.image(), samples.image(), rtol=0, atol=SPECTRA_RTOL * samples.image().max())
    # time-domain samples are refused by a spectra engine, NaN spectra too
    with pytest.raises(ValueError, match="complex"):
        spectra.push(spectra_of(data[:1], selection).real, background[:1])
    bad = spectra_of(data[:2], selection)
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        spectra.push(bad, background[:2])


def test_a_selection_missing_live_rows_is_a_system_matrix_mismatch(simulated):
    fields = stream_fields_from_mdf(simulated["stream"])
    selection = stream_frequency_selection(simulated["calibration"], params=PLAN)
    samples = LiveEngine.build(
        simulated["calibration"], StreamLayout.from_fields(fields, "float32"), simulated["roi_records"], params=PLAN
    )
    dropped = sorted(set((samples.selection.frequency + 1).tolist()))[:3]
    short = [k for k in selection if k not in dropped]
    with pytest.raises(LiveStreamError) as caught:
        LiveEngine.build(
            simulated["calibration"],
            StreamLayout.from_fields(fields, "complex64", short),
            simulated["roi_records"],
            params=PLAN,
        )
    assert caught.value.code == "system_matrix_mismatch"
    assert "3 of the live rows' frequencies are not in the stream's frequency selection" in caught.value.message


def _record(path, fields, data, background, selection=None):
    times = 1.7e9 + 0.02 * np.arange(data.shape[0])
    if selection is None:
        writer = MDFStreamWriter(path, fields, data.shape[1:], "float32")
        payload = data.astype(np.float32)
    else:
        payload = spectra_of(data, selection)
        writer = MDFStreamWriter(path, fields, payload.shape[1:], "complex64", selection)
    half = data.shape[0] // 2
    writer.append(payload[:half], times[:half], background[:half])
    writer.close()
    with MDFStreamWriter.reopen(path) as writer:  # one reopen per block, as the server does
        writer.append(payload[half:], times[half:], background[half:])
    return path


@pytest.fixture(scope="module")
def recordings(simulated, frames, tmp_path_factory):
    data, background = frames
    root = tmp_path_factory.mktemp("recordings")
    fields = stream_fields_from_mdf(simulated["stream"])
    selection = stream_frequency_selection(simulated["calibration"], params=PLAN)
    return {
        "root": root,
        "selection": selection,
        "samples": _record(root / "samples.mdf", fields, data, background),
        "spectra": _record(root / "spectra.mdf", fields, data, background, selection),
    }


def test_the_spectra_recording_is_a_valid_frequency_domain_mdf(recordings):
    report = validate(recordings["spectra"])
    assert report.valid, report.as_dict()
    selection = recordings["selection"]
    with h5py.File(recordings["spectra"], "r") as h5:
        assert h5["/measurement/isFourierTransformed"][()] and h5["/measurement/isFrequencySelection"][()]
        assert h5["/measurement/frequencySelection"][()].tolist() == selection
        assert h5["/measurement/data"].dtype == np.dtype("<c8") and h5["/measurement/data"].maxshape[0] is None
    with MDFFile(recordings["spectra"]) as rec, MDFFile(recordings["samples"]) as src:
        assert (rec.available_frequencies + 1).tolist() == selection
        assert rec.num_sampling_points == src.num_sampling_points and rec.num_frames == src.num_frames
        bins = rec.available_frequencies
        expected = src.spectra(frequencies=bins)
        np.testing.assert_allclose(rec.spectra(), expected, rtol=0, atol=1e-6 * np.abs(expected).max())
        np.testing.assert_array_equal(rec.is_background_frame, src.is_background_frame)
    with MDFStreamWriter.reopen(recordings["spectra"]) as again:
        assert again.dtype == "complex64" and again.frame_shape[2] == len(selection)


def test_the_offline_pipeline_reconstructs_the_spectra_recording_as_the_samples_one(simulated, recordings):
    root, calibration = recordings["root"], simulated["calibration"]
    params = ReconParams(dtype="float64", iterations=3)
    samples = reconstruct_file(calibration, recordings["samples"], root / "s.mdf", params)
    spectra = reconstruct_file(calibration, recordings["spectra"], root / "f.mdf", params)
    assert spectra.selection["num_rows"] == samples.selection["num_rows"]
    scale = np.abs(samples.concentration_mol_per_l).max()
    np.testing.assert_allclose(
        spectra.concentration_mol_per_l, samples.concentration_mol_per_l, rtol=0, atol=OFFLINE_RTOL * scale
    )
    # the array path (imaging.processing's): the stored frequencies are passed on
    with MDFFile(recordings["spectra"]) as f:
        stored, u = f.available_frequencies, f.spectra()
        bg = np.asarray(f.is_background_frame, dtype=bool)
    arrays = load_arrays(calibration, recordings["samples"])
    arrays.pop("measurement_spectra")
    arrays.pop("is_background_frame")
    by_arrays = reconstruct_arrays(
        **arrays, measurement_spectra=u, is_background_frame=bg, measurement_frequencies=stored, params=params
    )
    np.testing.assert_allclose(
        by_arrays.concentration_mol_per_l, samples.concentration_mol_per_l, rtol=0, atol=OFFLINE_RTOL * scale
    )
    with pytest.raises(ValueError, match="measurement_frequencies"):
        reconstruct_arrays(**arrays, measurement_spectra=u, measurement_frequencies=stored[:-1], params=params)


def test_a_selection_missing_offline_rows_is_reconstructed_from_the_intersection(simulated, frames, recordings):
    data, background = frames
    root = recordings["root"]
    fields = stream_fields_from_mdf(simulated["stream"])
    short = recordings["selection"][::2]
    path = _record(root / "short.mdf", fields, data, background, short)
    params = ReconParams(dtype="float64", iterations=3)
    result = reconstruct_file(simulated["calibration"], path, root / "short-rec.mdf", params)
    assert set((np.asarray(result.selection["frequency_index"]) + 1).tolist()) <= set(short)
    assert any("frequencies stored in both files" in note for note in result.notes)


@pytest.mark.parametrize(
    "shape, dtype, selection, message",
    [
        ((1, 2, 3), "float32", [1, 2, 3], "spectra are stored as"),
        ((1, 2, 3), "complex64", None, "dtype"),
        ((1, 2, 3), "complex64", [1, 2], "frequency_selection"),
        ((1, 2, 3), "complex64", [1, 3, 2], "frequency_selection"),
        ((1, 2, 3), "complex64", [0, 1, 2], "frequency_selection"),
    ],
)
def test_the_writer_refuses_inconsistent_spectra(tmp_path, shape, dtype, selection, message):
    with pytest.raises(RecordingError, match=message):
        MDFStreamWriter(tmp_path / "r.mdf", {}, shape, dtype, selection)
    assert not (tmp_path / "r.mdf").exists()
