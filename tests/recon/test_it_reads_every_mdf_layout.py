"""Every MDF v2 layout of issue #14 is read right or refused with a message.

Each test builds its files here: a small simulated 2D calibration + scan
(``recon.simulate``) is rewritten in one layout (frame permutation, transfer
functions and their flags, frequency selection, no background frames), then
reconstructed and compared with the same data in the plain layout. The
comparison tolerance is LAYOUT_RTOL of the largest voxel value: every layout
here holds the same numbers in complex128, so only floating-point rounding
(divisions by a transfer function, another summation order) may differ.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from recon.mdf import MDFError, MDFFile, write_mdf
from recon.params import ReconParams
from recon.pipeline import load_arrays, reconstruct_arrays, reconstruct_file
from recon.simulate import simulate_to_files
from recon.validate import validate, validate_pair

LAYOUT_RTOL = 1e-6
PARAMS = ReconParams(dtype="float64", iterations=3)


def read_fields(path) -> dict:
    """Every dataset of an MDF file, keyed by absolute path (strings left as bytes)."""
    out: dict = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: out.__setitem__("/" + name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The plain pair: calibration J x C x K x N with background last, scan in the frequency domain."""
    root = tmp_path_factory.mktemp("layouts")
    sim = simulate_to_files(root, dims=2, frames=4, seed=7, fast=True, grid=(8, 8, 1), background_frames=(3, 3))
    cal = read_fields(sim["system_matrix"])
    cal["/measurement/data"] = cal["/measurement/data"].astype(np.complex128)
    with MDFFile(sim["measurement"]) as f:
        spectra = f.spectra()  # (N, J, C, K) complex128
    scan = read_fields(sim["measurement"])
    scan["/measurement/data"] = spectra
    scan["/measurement/isFourierTransformed"] = True
    paths = {"cal": root / "cal.mdf", "scan": root / "scan.mdf"}
    write_mdf(paths["cal"], cal)
    write_mdf(paths["scan"], scan)
    reference = reconstruct_file(paths["cal"], paths["scan"], None, PARAMS)
    return {"cal": cal, "scan": scan, "paths": paths, "reference": reference, "root": root}


def write(tmp_path: Path, name: str, fields: dict) -> Path:
    path = tmp_path / name
    write_mdf(path, fields)
    return path


def assert_same_image(result, reference) -> None:
    scale = np.abs(reference.concentration_mol_per_l).max()
    np.testing.assert_allclose(
        result.concentration_mol_per_l, reference.concentration_mol_per_l, rtol=0, atol=LAYOUT_RTOL * scale
    )


def meander_acquisition(n_grid: int, n_background: int, nx: int) -> np.ndarray:
    """Acquisition index of each stored frame (grid order, background last) for a robot that
    snakes along x (every other row reversed) and takes one background frame first and one
    after every row: MPIFiles' ``fullFramePermutation`` of a meandering Bruker calibration."""
    rows = n_grid // nx
    acq_of_grid = np.empty(n_grid, dtype=np.int64)
    bg_acq = []
    t = 0
    for r in range(rows):
        bg_acq.append(t)
        t += 1
        xs = range(nx) if r % 2 == 0 else range(nx - 1, -1, -1)
        for x in xs:
            acq_of_grid[r * nx + x] = t
            t += 1
    while len(bg_acq) < n_background:
        bg_acq.append(t)
        t += 1
    return np.concatenate([acq_of_grid, np.asarray(bg_acq[:n_background])])


# --------------------------------------------------------------------------- #
# frame permutation
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("base", [0, 1])
def test_it_reads_a_permuted_calibration_in_grid_order_as_mpifiles_does(plain, tmp_path, base):
    """Stored frames in grid order, framePermutation = the acquisition index of each stored frame."""
    cal = dict(plain["cal"])
    n = cal["/measurement/data"].shape[-1]
    n_grid = 64
    perm = meander_acquisition(n_grid, n - n_grid, nx=8)
    assert sorted(perm.tolist()) == list(range(n)) and not np.array_equal(perm, np.arange(n))
    cal["/measurement/isFramePermutation"] = True
    cal["/measurement/framePermutation"] = perm + base
    path = write(tmp_path, "perm.mdf", cal)
    with MDFFile(path) as f, MDFFile(plain["paths"]["cal"]) as g:
        s, bg = f.system_matrix()
        s0, bg0 = g.system_matrix()
        np.testing.assert_array_equal(s, s0)
        np.testing.assert_array_equal(bg, bg0)
        # in acquisition order the background frames sit at the start of each row
        assert np.flatnonzero(f.is_background_frame)[:3].tolist() == [0, 9, 18]
    assert_same_image(reconstruct_file(path, plain["paths"]["scan"], None, PARAMS), plain["reference"])


def test_it_undoes_a_permuted_scan_so_background_interpolation_follows_time(plain, tmp_path):
    scan = dict(plain["scan"])
    data = scan["/measurement/data"]
    n = data.shape[0]
    perm = np.roll(np.arange(n), 3)[::-1].copy()  # stored frame i is acquisition frame perm[i]
    scan["/measurement/data"] = data[perm]
    scan["/measurement/isBackgroundFrame"] = scan["/measurement/isBackgroundFrame"][perm]
    scan["/measurement/isFramePermutation"] = True
    scan["/measurement/framePermutation"] = perm + 1
    path = write(tmp_path, "scan_perm.mdf", scan)
    result = reconstruct_file(plain["paths"]["cal"], path, None, PARAMS)
    assert_same_image(result, plain["reference"])
    assert result.frame_groups == plain["reference"].frame_groups


# --------------------------------------------------------------------------- #
# transfer functions
# --------------------------------------------------------------------------- #


def transfer_function(shape, seed: int) -> np.ndarray:
    """A receive chain that scales by 0.3-3 and rotates each frequency."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.3, 3.0, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))


def with_tf(fields: dict, tf: np.ndarray | None, *, apply: bool, flagged: bool, scan: bool) -> dict:
    """``fields`` with ``tf`` stored (when not None), the data multiplied by it (``apply``)."""
    out = dict(fields)
    data = out["/measurement/data"]
    if apply and tf is not None:
        # scan: N x J x C x K; calibration: J x C x K x N
        out["/measurement/data"] = data * (tf[None, None] if scan else tf[None, :, :, None])
    if tf is not None:
        out["/acquisition/receiver/transferFunction"] = tf
    out["/measurement/isTransferFunctionCorrected"] = flagged
    return out


def tf_pair(plain, tmp_path, cal_case, scan_case):
    """Cases: 'raw' (data x TF, TF stored), 'corrected' (flagged, TF stored),
    'corrected_no_tf' (flagged, no TF), 'none' (as measured, no TF, not flagged)."""
    C, K = plain["scan"]["/measurement/data"].shape[2:]
    tfs = {"cal": transfer_function((C, K), 1), "scan": transfer_function((C, K), 2)}

    def build(which, case):
        fields = plain[which]
        is_scan = which == "scan"
        tf = tfs[which]
        if case == "raw":
            return with_tf(fields, tf, apply=True, flagged=False, scan=is_scan)
        if case == "corrected":
            return with_tf(fields, tf, apply=False, flagged=True, scan=is_scan)
        if case == "corrected_no_tf":
            return with_tf(fields, None, apply=False, flagged=True, scan=is_scan)
        return with_tf(fields, None, apply=False, flagged=False, scan=is_scan)

    return (
        write(tmp_path, f"cal_{cal_case}.mdf", build("cal", cal_case)),
        write(tmp_path, f"scan_{scan_case}.mdf", build("scan", scan_case)),
    )


@pytest.mark.parametrize(
    "cal_case, scan_case",
    [
        ("raw", "raw"),  # each divided by its own
        ("corrected", "raw"),  # issue #14: 6x too high before
        ("corrected_no_tf", "raw"),
        ("raw", "corrected"),
        ("raw", "corrected_no_tf"),
        ("corrected", "corrected"),  # nothing divided twice
    ],
)
def test_it_brings_both_files_to_the_same_transfer_function_state(plain, tmp_path, cal_case, scan_case):
    cal, scan = tf_pair(plain, tmp_path, cal_case, scan_case)
    result = reconstruct_file(cal, scan, None, PARAMS)
    assert_same_image(result, plain["reference"])
    assert any(note.startswith("transfer function:") for note in result.notes)


@pytest.mark.parametrize(
    "cal_case, scan_case, states",
    [
        ("none", "raw", "the calibration is raw, without a transfer function and the measurement is raw, with its"),
        ("raw", "none", "the calibration is raw, with its transfer function and the measurement is raw, without"),
        ("corrected", "none", "the calibration is flagged isTransferFunctionCorrected and the measurement is raw, "),
        ("none", "corrected_no_tf", "the calibration is raw, without a transfer function and the measurement is flag"),
    ],
)
def test_it_refuses_transfer_function_states_it_cannot_reconcile(plain, tmp_path, cal_case, scan_case, states):
    cal, scan = tf_pair(plain, tmp_path, cal_case, scan_case)
    out = tmp_path / "never.mdf"
    with pytest.raises(ValueError, match="the two cannot be brought to the same state") as exc:
        reconstruct_file(cal, scan, out, PARAMS)
    assert states in str(exc.value)
    assert not out.exists()


# --------------------------------------------------------------------------- #
# frequency selection
# --------------------------------------------------------------------------- #


def keep_only(plain_fields: dict, keep: np.ndarray, *, scan: bool, base: int, snr_stored: bool) -> dict:
    out = dict(plain_fields)
    data = out["/measurement/data"]
    out["/measurement/data"] = data[..., keep] if scan else data[:, :, keep, :]
    out["/measurement/isFrequencySelection"] = True
    out["/measurement/frequencySelection"] = keep + base
    if not scan and snr_stored:
        out["/calibration/snr"] = out["/calibration/snr"][..., keep]
    return out


def reference_restricted_to(plain, tmp_path, keep: np.ndarray):
    """The plain calibration with SNR 0 outside ``keep``: the same rows selected, nothing else changed."""
    cal = dict(plain["cal"])
    snr = cal["/calibration/snr"].copy()
    mask = np.ones(snr.shape[-1], bool)
    mask[keep] = False
    snr[..., mask] = 0.0
    cal["/calibration/snr"] = snr
    return reconstruct_file(write(tmp_path, "ref_cal.mdf", cal), plain["paths"]["scan"], None, PARAMS)


@pytest.mark.parametrize(
    "base, snr_stored, order",
    [(1, True, "sorted"), (0, True, "sorted"), (1, False, "shuffled"), (1, True, "shuffled")],
)
def test_it_reconstructs_a_frequency_selected_calibration_without_max_freq(plain, tmp_path, base, snr_stored, order):
    K = plain["cal"]["/measurement/data"].shape[2]
    rng = np.random.default_rng(4)
    keep = np.sort(rng.choice(np.arange(1, K - 1), size=K // 3, replace=False))
    # a 0 proves a 0-based list, K (written 1-based) a 1-based one
    keep = np.union1d(keep, [0] if base == 0 else [K - 1])
    if order == "shuffled":
        keep = rng.permutation(keep)
    cal = write(tmp_path, "cal_sel.mdf", keep_only(plain["cal"], keep, scan=False, base=base, snr_stored=snr_stored))
    result = reconstruct_file(cal, plain["paths"]["scan"], None, PARAMS)
    assert_same_image(result, reference_restricted_to(plain, tmp_path, keep))
    assert set(result.selection["frequency_index"]) <= set(keep.tolist())


def test_it_reconstructs_with_a_frequency_selected_scan(plain, tmp_path):
    K = plain["cal"]["/measurement/data"].shape[2]
    keep = np.arange(0, K, 2)
    scan = write(tmp_path, "scan_sel.mdf", keep_only(plain["scan"], keep, scan=True, base=1, snr_stored=False))
    result = reconstruct_file(plain["paths"]["cal"], scan, None, PARAMS)
    assert_same_image(result, reference_restricted_to(plain, tmp_path, keep))


def test_it_reads_a_transfer_function_stored_for_the_selected_frequencies_only(plain, tmp_path):
    """MPIFiles' saveasMDF with a frequency selection keeps rxTransferFunction at those frequencies."""
    K = plain["cal"]["/measurement/data"].shape[2]
    keep = np.arange(1, K, 3)
    cal_path, scan_path = tf_pair(plain, tmp_path, "corrected", "raw")
    scan = read_fields(scan_path)
    scan = keep_only(scan, keep, scan=True, base=1, snr_stored=False)
    scan["/acquisition/receiver/transferFunction"] = scan["/acquisition/receiver/transferFunction"][:, keep]
    path = write(tmp_path, "scan_sel_tf.mdf", scan)
    result = reconstruct_file(cal_path, path, None, PARAMS)
    assert_same_image(result, reference_restricted_to(plain, tmp_path, keep))


def test_it_refuses_a_frequency_selection_that_lists_a_frequency_twice(plain, tmp_path):
    K = plain["cal"]["/measurement/data"].shape[2]
    keep = np.array([3, 5, 5, 9])
    cal = keep_only(plain["cal"], keep, scan=False, base=1, snr_stored=True)
    path = write(tmp_path, "dup.mdf", cal)
    with pytest.raises(MDFError, match="frequencySelection lists a frequency more than once"):
        reconstruct_file(path, plain["paths"]["scan"], None, PARAMS)
    assert K > 9


# --------------------------------------------------------------------------- #
# no background frames in the scan
# --------------------------------------------------------------------------- #


def test_it_falls_back_to_the_calibration_background_for_a_scan_without_background_frames(plain, tmp_path):
    scan = dict(plain["scan"])
    fg = ~scan["/measurement/isBackgroundFrame"].astype(bool)
    n_fg = int(fg.sum())
    only_fg = dict(scan)
    only_fg["/measurement/data"] = scan["/measurement/data"][fg]
    only_fg["/measurement/isBackgroundFrame"] = np.zeros(n_fg, bool)
    only_fg["/acquisition/numFrames"] = n_fg
    path = write(tmp_path, "no_bg.mdf", only_fg)
    result = reconstruct_file(plain["paths"]["cal"], path, None, PARAMS)  # default background: interpolate
    assert any("subtracted the mean of the calibration's 20 empty-bore frames" in n for n in result.notes)
    # Reference: the same foreground frames followed by the calibration's own background frames
    # as the scan's background block, with background="mean".
    cal_bg = np.moveaxis(plain["cal"]["/measurement/data"][..., -20:], 3, 0)  # (20, J, C, K)
    with_cal_bg = dict(only_fg)
    with_cal_bg["/measurement/data"] = np.concatenate([only_fg["/measurement/data"], cal_bg])
    with_cal_bg["/measurement/isBackgroundFrame"] = np.r_[np.zeros(n_fg, bool), np.ones(20, bool)]
    with_cal_bg["/acquisition/numFrames"] = n_fg + 20
    reference = reconstruct_file(
        plain["paths"]["cal"], write(tmp_path, "ref.mdf", with_cal_bg), None, PARAMS.replace(background="mean")
    )
    assert_same_image(result, reference)
    # and it is a usable image: within 15 % (L2) of the one made with the scan's own background
    own = plain["reference"].concentration_mol_per_l
    err = np.linalg.norm(result.concentration_mol_per_l - own) / np.linalg.norm(own)
    assert err < 0.15, err


def test_it_refuses_a_scan_and_a_calibration_that_both_lack_background_frames(plain, tmp_path):
    scan = dict(plain["scan"])
    fg = ~scan["/measurement/isBackgroundFrame"].astype(bool)
    scan["/measurement/data"] = scan["/measurement/data"][fg]
    scan["/measurement/isBackgroundFrame"] = np.zeros(int(fg.sum()), bool)
    scan["/acquisition/numFrames"] = int(fg.sum())
    cal = dict(plain["cal"])
    cal["/measurement/data"] = cal["/measurement/data"][..., :64]
    cal["/measurement/isBackgroundFrame"] = np.zeros(64, bool)
    cal["/acquisition/numFrames"] = 64
    with pytest.raises(ValueError, match="the scan has none flagged isBackgroundFrame and the calibration has no"):
        reconstruct_file(write(tmp_path, "c.mdf", cal), write(tmp_path, "s.mdf", scan), None, PARAMS)
    # background="none" is an explicit choice and goes through
    result = reconstruct_file(
        write(tmp_path, "c.mdf", cal), write(tmp_path, "s.mdf", scan), None, PARAMS.replace(background="none")
    )
    assert "measurement: no background correction" in result.notes


# --------------------------------------------------------------------------- #
# validate reports what reconstruct refuses
# --------------------------------------------------------------------------- #


def refusal_cases(plain, tmp_path) -> dict[str, tuple[Path, Path]]:
    cases = {}
    for cal_case, scan_case in (("none", "raw"), ("raw", "none"), ("corrected", "none")):
        cases[f"tf_{cal_case}_{scan_case}"] = tf_pair(plain, tmp_path, cal_case, scan_case)
    for name, value in (("zero", 0.0), ("negative", -1.0), ("nan", np.nan)):
        cal = dict(plain["cal"])
        cal["/tracer/concentration"] = np.array([value])
        cases[f"concentration_{name}"] = (write(tmp_path, f"conc_{name}.mdf", cal), plain["paths"]["scan"])
    cal = dict(plain["cal"])
    del cal["/tracer/concentration"]
    cases["concentration_missing"] = (write(tmp_path, "conc_missing.mdf", cal), plain["paths"]["scan"])
    cal = dict(plain["cal"])
    cal["/calibration/order"] = "zyx"
    cases["order_zyx"] = (write(tmp_path, "order.mdf", cal), plain["paths"]["scan"])
    cal = dict(plain["cal"])
    cal["/calibration/snr"] = cal["/calibration/snr"][..., :10]
    cases["snr_short"] = (write(tmp_path, "snr.mdf", cal), plain["paths"]["scan"])
    scan = dict(plain["scan"])
    fg = ~scan["/measurement/isBackgroundFrame"].astype(bool)
    scan["/measurement/data"] = scan["/measurement/data"][fg]
    scan["/measurement/isBackgroundFrame"] = np.zeros(int(fg.sum()), bool)
    scan["/acquisition/numFrames"] = int(fg.sum())
    cal = dict(plain["cal"])
    cal["/measurement/data"] = cal["/measurement/data"][..., :64]
    cal["/measurement/isBackgroundFrame"] = np.zeros(64, bool)
    cal["/acquisition/numFrames"] = 64
    cases["no_background_anywhere"] = (write(tmp_path, "nobg_c.mdf", cal), write(tmp_path, "nobg_s.mdf", scan))
    K = plain["cal"]["/measurement/data"].shape[2]
    cal = keep_only(plain["cal"], np.arange(1, K, 2), scan=False, base=1, snr_stored=True)
    scan = keep_only(plain["scan"], np.arange(0, K, 2), scan=True, base=1, snr_stored=False)
    cases["no_common_frequency"] = (write(tmp_path, "odd.mdf", cal), write(tmp_path, "even.mdf", scan))
    cal = keep_only(plain["cal"], np.array([3, 5, 5, 9]), scan=False, base=1, snr_stored=True)
    cases["duplicate_frequency"] = (write(tmp_path, "dup.mdf", cal), plain["paths"]["scan"])
    cases["scan_as_calibration"] = (plain["paths"]["scan"], plain["paths"]["scan"])
    return cases


def test_validate_reports_every_refusal_of_reconstruct_in_its_words(plain, tmp_path):
    cases = refusal_cases(plain, tmp_path)
    for name, (cal, scan) in cases.items():
        with pytest.raises((ValueError, MDFError)) as exc:
            reconstruct_file(cal, scan, None, PARAMS)
        refused = str(exc.value)
        report = validate_pair(cal, scan)
        assert not report.valid, name
        messages = [p.message for p in report.problems]
        assert any(refused in m or m in refused for m in messages), (name, refused, messages)
    # and the plain pair passes both
    assert validate_pair(plain["paths"]["cal"], plain["paths"]["scan"]).valid
    reconstruct_file(plain["paths"]["cal"], plain["paths"]["scan"], None, PARAMS)


def test_validate_alone_flags_a_calibration_reconstruct_would_refuse(plain, tmp_path):
    cal = dict(plain["cal"])
    cal["/tracer/concentration"] = np.array([0.0])
    report = validate(write(tmp_path, "zero.mdf", cal))
    assert not report.valid
    assert [(p.code, p.path) for p in report.problems] == [("not_reconstructable", "/tracer/concentration")]
    assert "/tracer/concentration missing or not > 0 (0.0)" in report.problems[0].message
    assert validate(plain["paths"]["cal"]).valid


def test_the_array_path_reads_the_same_layouts_as_the_file_path(plain, tmp_path):
    """load_arrays + reconstruct_arrays on a frequency-selected raw scan with its transfer function
    and a calibration flagged corrected: the same image as reconstruct_file."""
    K = plain["cal"]["/measurement/data"].shape[2]
    keep = np.arange(1, K, 3)
    cal_path, scan_path = tf_pair(plain, tmp_path, "corrected", "raw")
    scan = keep_only(read_fields(scan_path), keep, scan=True, base=1, snr_stored=False)
    path = write(tmp_path, "scan_sel_tf.mdf", scan)
    from_files = reconstruct_file(cal_path, path, None, PARAMS)
    from_arrays = reconstruct_arrays(params=PARAMS, **load_arrays(cal_path, path))
    assert_same_image(from_arrays, from_files)
    assert_same_image(from_files, reference_restricted_to(plain, tmp_path, keep))


def test_the_cli_validates_a_pair_as_reconstruct_would(plain, tmp_path, capsys):
    from recon.cli import main

    cal, scan = tf_pair(plain, tmp_path, "none", "raw")
    assert main(["validate", str(cal)]) == 0  # each file alone is fine
    assert main(["validate", str(scan)]) == 0
    capsys.readouterr()
    assert main(["validate", str(cal), "--measurement", str(scan)]) == 1
    out, err = capsys.readouterr()
    assert "not_reconstructable: transfer functions: the calibration is raw, without a transfer function" in err
    assert main(["validate", str(plain["paths"]["cal"]), "--measurement", str(plain["paths"]["scan"])]) == 0
