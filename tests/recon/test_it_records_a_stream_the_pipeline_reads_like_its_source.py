"""recon.recording.MDFStreamWriter: a simulated measurement replayed frame block by frame
block (its header as a stream carries it: JSON values) into a growing recording is, for
the offline pipeline, the same scan as its source: same frames, background mask and
header; validate passes; reconstruction and quantification agree within SAME_RTOL of
the largest value (both read the same float32 samples: only the file layout differs).
An appended frame survives a crash of the writing process (flush + fsync, no close)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from recon.mdf import MDFFile
from recon.params import ReconParams
from recon.pipeline import reconstruct_file
from recon.quantify import quantify_file
from recon.recording import MDFStreamWriter, RecordingError, chain_digest, frames_sha256
from recon.simulate import simulate_to_files
from recon.validate import validate

SAME_RTOL = 1e-6
PARAMS = ReconParams(dtype="float64", iterations=3)
PREFIXES = ("/study/", "/experiment/", "/scanner/", "/acquisition/", "/tracer/")


def header_fields(path) -> dict:
    """The source's header fields as a stream header carries them (JSON values)."""
    out: dict = {}

    def visit(name, obj):
        key = "/" + name
        if isinstance(obj, h5py.Dataset) and key.startswith(PREFIXES):
            value = obj[()]
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, np.ndarray) and value.dtype.kind == "S":
                value = np.char.decode(value, "utf-8").tolist()
            elif isinstance(value, np.ndarray | np.generic):
                value = value.tolist()
            out[key] = value

    with h5py.File(path, "r") as h5:
        h5.visititems(visit)
    return json.loads(json.dumps(out))


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    root = tmp_path_factory.mktemp("recording")
    sim = simulate_to_files(root, dims=2, frames=6, seed=5, fast=True, grid=(8, 8, 1), background_frames=(3, 3))
    with h5py.File(sim["measurement"], "r") as h5:
        data = np.asarray(h5["/measurement/data"])
        background = np.asarray(h5["/measurement/isBackgroundFrame"]).astype(bool)
    times = 1.7e9 + 0.02 * np.arange(data.shape[0])
    path = root / "live.mdf"
    writer = MDFStreamWriter(path, header_fields(sim["measurement"]), data.shape[1:], "float32")
    writer.append(data[:5], times[:5], background[:5])
    writer.close()
    for start, stop in ((5, 6), (6, data.shape[0])):  # one reopen per block, as the server does
        with MDFStreamWriter.reopen(path) as writer:
            assert writer.append(data[start:stop], times[start:stop], background[start:stop]) == stop
    return {"sim": sim, "path": path, "data": data, "background": background, "times": times, "root": root}


def test_the_recording_holds_the_frames_times_and_header_of_its_source(replayed):
    with MDFFile(replayed["path"]) as rec, MDFFile(replayed["sim"]["measurement"]) as src:
        assert rec.kind == "measurement" and rec.version.startswith("2.")
        assert rec.num_frames == src.num_frames == replayed["data"].shape[0]
        np.testing.assert_array_equal(rec.is_background_frame, src.is_background_frame)
        np.testing.assert_array_equal(rec.spectra(), src.spectra())
        assert rec.layout == src.layout
        assert rec.base_frequency_hz == src.base_frequency_hz
        np.testing.assert_array_equal(rec.dividers, src.dividers)
        np.testing.assert_array_equal(rec.drive_strength_t, src.drive_strength_t)
    with h5py.File(replayed["path"], "r") as h5:
        assert h5["/measurement/data"].maxshape[0] is None and h5["/measurement/data"].chunks is not None
        np.testing.assert_array_equal(h5["/measurement/_frameAcquiredAt"][()], replayed["times"])
        assert h5["/acquisition/numFrames"][()] == replayed["data"].shape[0]
        assert h5["/uuid"][()] and h5["/time"][()]
    report = validate(replayed["path"])
    assert report.valid, report.as_dict()


def test_reconstruction_and_quantification_agree_with_the_source(replayed):
    sim, root = replayed["sim"], replayed["root"]
    source = reconstruct_file(sim["system_matrix"], sim["measurement"], root / "src-rec.mdf", PARAMS)
    recorded = reconstruct_file(sim["system_matrix"], replayed["path"], root / "rec-rec.mdf", PARAMS)
    scale = np.abs(source.concentration_mol_per_l).max()
    np.testing.assert_allclose(
        recorded.concentration_mol_per_l, source.concentration_mol_per_l, rtol=0, atol=SAME_RTOL * scale
    )
    assert recorded.frame_groups == source.frame_groups
    q_src = quantify_file(root / "src-rec.mdf", sim["rois"], system_matrix_path=sim["system_matrix"])
    q_rec = quantify_file(root / "rec-rec.mdf", sim["rois"], system_matrix_path=sim["system_matrix"])
    assert [r.name for r in q_rec.rois] == [r.name for r in q_src.rois]
    for a, b in zip(q_rec.rois, q_src.rois, strict=True):
        tolerance = SAME_RTOL * max(abs(q_src.total_detected_iron_ng), abs(b.iron_mass_ng))
        assert a.iron_mass_ng == pytest.approx(b.iron_mass_ng, abs=tolerance)
        assert a.detected == b.detected
    assert q_rec.off_target_percent == pytest.approx(q_src.off_target_percent, abs=SAME_RTOL * 100)


def test_a_rewrite_from_an_earlier_frame_cuts_the_file_there(tmp_path):
    frames = np.arange(5 * 2 * 3 * 4, dtype=np.int16).reshape(5, 2, 3, 4)
    path = tmp_path / "r.mdf"
    with MDFStreamWriter(path, {"/acquisition/numAverages": 1}, (2, 3, 4), "int16") as w:
        w.append(frames, np.arange(5.0), [False] * 5)
        # The database acknowledged only 3: the next block is written from there.
        assert w.append(frames[3:4] + 1, [10.0], [True], at=3) == 4
        np.testing.assert_array_equal(w.read_frames(0, 4), np.concatenate([frames[:3], frames[3:4] + 1]))
    with h5py.File(path, "r") as h5:
        assert h5["/measurement/data"].shape == (4, 2, 3, 4) and h5["/acquisition/numFrames"][()] == 4
        assert h5["/measurement/isBackgroundFrame"][()].tolist() == [0, 0, 0, 1]
        assert h5["/measurement/data"].dtype == np.dtype("<i2")
    expected = chain_digest(chain_digest("", frames_sha256(frames[:2])), frames_sha256(frames[2:3]))
    assert len(expected) == 64 and expected != chain_digest("", frames_sha256(frames[:3]))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda p: MDFStreamWriter(p, {}, (1, 2), "int16"), "frame_shape"),
        (lambda p: MDFStreamWriter(p, {}, (1, 2, 3), "uint8"), "dtype"),
        (lambda p: MDFStreamWriter(p, {"/measurement/data": 1}, (1, 2, 3), "int16"), "cannot be set"),
        (lambda p: MDFStreamWriter.reopen(p.parent / "missing.mdf"), "cannot reopen"),
    ],
)
def test_it_refuses_what_it_cannot_record(tmp_path, build, message):
    with pytest.raises(RecordingError, match=message):
        build(tmp_path / "r.mdf")
    assert not (tmp_path / "r.mdf").exists()


def test_it_refuses_frames_of_another_shape_and_a_gap(tmp_path):
    with MDFStreamWriter(tmp_path / "r.mdf", {}, (1, 2, 3), "float32") as w:
        with pytest.raises(RecordingError, match="frames must be"):
            w.append(np.zeros((1, 1, 2, 4), np.float32), [0.0], [False])
        with pytest.raises(RecordingError, match="cannot write from frame 2"):
            w.append(np.zeros((1, 1, 2, 3), np.float32), [0.0], [False], at=2)
        with pytest.raises(RecordingError, match="acquisition times"):
            w.append(np.zeros((2, 1, 2, 3), np.float32), [0.0], [False, True])
        assert w.num_frames == 0
    with pytest.raises(RecordingError, match="exists"):
        MDFStreamWriter(tmp_path / "r.mdf", {}, (1, 2, 3), "float32")


def test_an_appended_frame_survives_a_crash_of_the_writer(tmp_path):
    path = tmp_path / "crash.mdf"
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from recon.recording import MDFStreamWriter
        w = MDFStreamWriter({str(path)!r}, {{"/acquisition/numAverages": 1}}, (1, 2, 8), "int16")
        for i in range(3):
            w.append(np.full((2, 1, 2, 8), i, np.int16), [i, i + 0.5], [i == 0, i == 0])
        os._exit(0)  # no close, no flush at exit: only what append made durable remains
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with MDFStreamWriter.reopen(path) as w:
        assert w.num_frames == 6
        np.testing.assert_array_equal(w.read_frames(4, 6), np.full((2, 1, 2, 8), 2, np.int16))
        assert w.append(np.zeros((1, 1, 2, 8), np.int16), [9.0], [False]) == 7


def test_the_injection_marks_are_written_once_and_replaced_whole(tmp_path):
    path = tmp_path / "marks.mdf"
    with MDFStreamWriter(path, {}, (1, 2, 3), "float32") as w:
        w.append(np.zeros((3, 1, 2, 3), np.float32), [1.0, 2.0, 3.0], [True, False, False])
        w.write_marks(["injection_start"], [None], [1.7e9])
        w.write_marks(["injection_start", "injection_stop"], [None, 3], [1.7e9, 1.7e9 + 2.5])
        with pytest.raises(RecordingError, match="2 marks need"):
            w.write_marks(["injection_start", "injection_stop"], [0], [1.7e9, 1.7e9])
        with pytest.raises(RecordingError, match="finite"):
            w.write_marks(["injection_start"], [0], [float("nan")])
    with h5py.File(path, "r") as h5:
        assert h5["/measurement/_marks"][()].tolist() == [b"injection_start", b"injection_stop"]
        assert h5["/measurement/_markFrames"][()].tolist() == [-1, 3]
        assert h5["/measurement/_markTimes"][()].tolist() == [1.7e9, 1.7e9 + 2.5]
