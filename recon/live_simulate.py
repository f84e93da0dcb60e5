"""A simulated injection streamed frame by frame: the test and benchmark input of live monitoring.

One measurement MDF (time domain, one frame per time point, ``isBackgroundFrame``)
and its calibration, both from ``recon.simulate`` (same scanner, same scanner
background, the receiver noise ``DEFAULT_NOISE_STD_V``), of the mouse phantom's
regions (``recon.phantoms.mouse``: heart = target, two lungs, liver) filling over time:

- empty-bore frames at the start (and at the end);
- the injection runs from ``injection_start`` for ``injection_frames`` foreground
  frames: the injected iron rises linearly to ``dose_ng``;
- the target holds (1 − lung_fraction − liver_fraction) of what has been injected;
- the lungs (both, half each) fill linearly to lung_fraction × dose from
  ``lung_onset`` to the end of the injection, the liver to liver_fraction × dose
  from ``liver_onset`` over half the injection time.

Each region's signal is its noise-free particle spectrum at 1 ng (computed once on
sub-voxel positions, ``fine_factor`` per driven axis, so the forward model is never
the calibration's) times its iron at that frame: the Langevin model is linear in the
amount of iron. The scanner background drifts slowly in amplitude over the stream.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from recon import phantoms as _phantoms
from recon.physics import Particles, iron_mass_to_magnetite_volume_m3, sample_spectra
from recon.simulate import (
    DEFAULT_NOISE_STD_V,
    _acquisition_fields,
    default_grid,
    scanner_background_spectrum,
    scanner_preset,
    simulate_system_matrix,
    write_system_matrix_mdf,
)

#: Default dose: iron of a cell-tracking injection (e.g. 1e5 cells x 30 pg Fe).
DEFAULT_DOSE_NG = 3000.0


def _ramp(t: np.ndarray, start: float, length: float) -> np.ndarray:
    """0 before ``start``, rising linearly to 1 over ``length`` frames, then 1."""
    return np.clip((t - start + 1.0) / max(length, 1.0), 0.0, 1.0)


def injection_time_course(
    num_frames: int,
    *,
    dose_ng: float = DEFAULT_DOSE_NG,
    injection_start: int | None = None,
    injection_frames: int | None = None,
    lung_fraction: float = 0.2,
    liver_fraction: float = 0.0,
    lung_onset: int | None = None,
    liver_onset: int | None = None,
) -> dict[str, np.ndarray]:
    """Iron (ng) per foreground frame: {"injected", "target", "lungs", "liver"}, each (num_frames,)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not (lung_fraction >= 0 and liver_fraction >= 0 and lung_fraction + liver_fraction <= 1):
        raise ValueError(
            f"lung and liver fractions must be >= 0 and sum to <= 1, got {lung_fraction}, {liver_fraction}"
        )
    if not (math.isfinite(dose_ng) and dose_ng > 0):
        raise ValueError(f"dose_ng must be > 0, got {dose_ng}")
    start = num_frames // 10 if injection_start is None else int(injection_start)
    length = max(num_frames // 2, 1) if injection_frames is None else int(injection_frames)
    end = start + length
    lung_on = start + length // 4 if lung_onset is None else int(lung_onset)
    liver_on = start + length // 2 if liver_onset is None else int(liver_onset)
    t = np.arange(num_frames, dtype=np.float64)
    injected = dose_ng * _ramp(t, start, length)
    target = (1.0 - lung_fraction - liver_fraction) * injected
    lungs = lung_fraction * dose_ng * _ramp(t, lung_on, max(end - lung_on, 1))
    liver = liver_fraction * dose_ng * _ramp(t, liver_on, max(length // 2, 1))
    return {"injected": injected, "target": target, "lungs": lungs, "liver": liver}


def injection_mark_frames(injected: np.ndarray | list[float]) -> tuple[int, int]:
    """(first frame with iron injected, first frame after the whole dose was) of an injected-iron
    series: the frames at which the injection's start and stop marks belong."""
    series = np.asarray(injected, dtype=np.float64)
    if series.size == 0 or not series.max() > 0:
        raise ValueError("no iron is injected in this series")
    start = int(np.flatnonzero(series > 0)[0])
    stop = int(np.flatnonzero(series >= series.max() * (1 - 1e-12))[0]) + 1
    return start, stop


def truth_mark_frames(truth: dict) -> tuple[int, int]:
    """The simulated injection's (start, stop) stream frames from its ``truth.json`` (an older
    one without them: from its injected-iron series, ``injection_mark_frames``)."""
    if "injection_start_frame" in truth and "injection_stop_frame" in truth:
        return int(truth["injection_start_frame"]), int(truth["injection_stop_frame"])
    return injection_mark_frames(truth["injected_ng"])


def injection_duration_s(truth: dict) -> float:
    """The simulated injection's duration (s): its frames from start to stop x the frame duration."""
    start, stop = truth_mark_frames(truth)
    return (stop - start) * float(truth["frame_duration_s"])


def simulate_injection_stream(
    output_dir: str | os.PathLike,
    *,
    dims: int = 2,
    grid: tuple[int, int, int] | None = None,
    num_frames: int = 120,
    background_frames: tuple[int, int] = (10, 5),
    dose_ng: float = DEFAULT_DOSE_NG,
    lung_fraction: float = 0.2,
    liver_fraction: float = 0.0,
    injection_start: int | None = None,
    injection_frames: int | None = None,
    lung_onset: int | None = None,
    liver_onset: int | None = None,
    seed: int = 0,
    noise_std_v: float = DEFAULT_NOISE_STD_V,
    drift: float = 0.05,
    fine_factor: int = 3,
    dtype: str = "float32",
    num_averages: int = 1,
) -> dict:
    """Write ``calibration.mdf``, ``stream.mdf``, ``rois.json`` and ``truth.json`` into ``output_dir``.

    ``num_frames`` foreground frames between ``background_frames`` = (before, after)
    empty-bore frames, each the mean of ``num_averages`` drive cycles (a frame lasts
    cycle x num_averages; its noise falls by sqrt(num_averages)); ``dtype`` "float32"
    (volts) or "int16" (with a ``dataConversionFactor``). Returns {paths..., "regions", "kinds", "iron_ng"
    (N, R) list (0 on background frames), "injected_ng" (N,), "is_background" (N,),
    "roi_records", "frame_duration_s", "dims", "seed"}; truth.json holds the same.
    """
    if num_averages < 1:
        raise ValueError(f"num_averages must be >= 1, got {num_averages}")
    if dtype not in ("float32", "int16"):
        raise ValueError(f"dtype must be 'float32' or 'int16', got {dtype!r}")
    before, after = (int(v) for v in background_frames)
    if before < 0 or after < 0:
        raise ValueError(f"background_frames must be >= 0, got {background_frames}")
    course = injection_time_course(
        num_frames,
        dose_ng=dose_ng,
        injection_start=injection_start,
        injection_frames=injection_frames,
        lung_fraction=lung_fraction,
        liver_fraction=liver_fraction,
        lung_onset=lung_onset,
        liver_onset=liver_onset,
    )
    out = os.fspath(output_dir)
    os.makedirs(out, exist_ok=True)
    scanner = scanner_preset(dims)
    particles = Particles()
    size = tuple(int(v) for v in (grid if grid is not None else default_grid(dims)))
    if len(size) != 3:
        raise ValueError(f"grid needs 3 entries (x, y, z), got {size}")
    rng = np.random.default_rng(seed)
    background = scanner_background_spectrum(scanner, rng, noise_std_v)
    sm = simulate_system_matrix(
        scanner,
        particles,
        (size[0], size[1], size[2]),
        rng=rng,
        noise_std_v=noise_std_v,
        background_spectrum=background,
        delta_subsamples=2 if dims < 3 else 1,
    )
    # Unit phantom: every region holds 1 ng, so its spectrum is the signal per ng.
    inclusions = _phantoms.mouse(sm.fov_m, dims=dims, target_iron_ng=1.0, lung_fraction=1.0, liver_fraction=1.0)
    raster = _phantoms.rasterise(inclusions, size, sm.fov_m, sm.center_m, factor=fine_factor, dims=dims)
    volumes = iron_mass_to_magnetite_volume_m3(raster.iron_ng * 1e-12)
    unit = sample_spectra(scanner, particles, raster.positions_m, volumes, raster.label, len(inclusions))  # (R, C, K)
    per_kind = {"target": course["target"], "lungs": course["lungs"], "liver": course["liver"]}
    count = {k: sum(1 for inc in inclusions if inc.kind == k) for k in per_kind}
    fg_iron = np.stack(
        [per_kind.get(inc.kind, np.zeros(num_frames)) / max(count.get(inc.kind, 1), 1) for inc in inclusions], axis=1
    )  # (F, R)
    n_total = before + num_frames + after
    is_bg = np.ones(n_total, dtype=bool)
    is_bg[before : before + num_frames] = False
    iron = np.zeros((n_total, len(inclusions)))
    iron[before : before + num_frames] = fg_iron
    injected = np.zeros(n_total)
    injected[before : before + num_frames] = course["injected"]
    start, stop = injection_mark_frames(course["injected"])
    injected[before + num_frames :] = course["injected"][-1]
    c, v = scanner.num_receive_channels, scanner.num_sampling_points
    # A frame is the mean of num_averages drive cycles: its receiver noise falls by sqrt(num_averages).
    frame_noise_v = noise_std_v / math.sqrt(num_averages)
    volts = np.empty((n_total, 1, c, v), dtype=np.float64)
    for n in range(n_total):
        s = n / max(n_total - 1, 1)
        spec = background * (1.0 + drift * s) * np.exp(1j * 0.1 * drift * s)
        spec = spec + np.tensordot(iron[n], unit, axes=1)
        volts[n, 0] = np.fft.irfft(spec, n=v, axis=-1) + frame_noise_v * rng.standard_normal((c, v))
    fields = _acquisition_fields(scanner, n_total, num_averages)
    if dtype == "int16":
        scale = float(np.abs(volts).max()) / 30000.0
        data = np.round(volts / scale).astype(np.int16)
        fields["/acquisition/receiver/dataConversionFactor"] = np.tile([[scale, 0.0]], (c, 1))
    else:
        data = volts.astype(np.float32)
    from recon.mdf import RAW_MEASUREMENT_FLAGS, write_mdf

    fields.update(
        {
            "/experiment/name": "simulated injection stream",
            "/measurement/data": data,
            **RAW_MEASUREMENT_FLAGS,
            "/measurement/isBackgroundFrame": is_bg,
        }
    )

    paths = {
        "calibration": os.path.join(out, "calibration.mdf"),
        "stream": os.path.join(out, "stream.mdf"),
        "rois": os.path.join(out, "rois.json"),
        "truth": os.path.join(out, "truth.json"),
    }
    write_system_matrix_mdf(paths["calibration"], sm)
    write_mdf(paths["stream"], fields)
    records = _phantoms.rois_json_records(inclusions)
    with open(paths["rois"], "w", encoding="utf-8") as fh:
        json.dump({"rois": records}, fh, indent=2)
    truth = {
        "regions": [inc.name for inc in inclusions],
        "kinds": [inc.kind for inc in inclusions],
        "iron_ng": iron.tolist(),
        "injected_ng": injected.tolist(),
        "is_background": is_bg.tolist(),
        # The simulated injection runs from frame start to the frame before stop (stream indices):
        # where a clinician marks its start and stop (live.dose: a mark's frame is the next frame).
        "injection_start_frame": before + start,
        "injection_stop_frame": before + stop,
        "dose_ng": float(dose_ng),
        "lung_fraction": float(lung_fraction),
        "liver_fraction": float(liver_fraction),
        "frame_duration_s": float(scanner.period_s) * num_averages,
        "num_averages": int(num_averages),
        "dims": int(dims),
        "grid": list(size),
        "seed": int(seed),
        "dtype": dtype,
    }
    with open(paths["truth"], "w", encoding="utf-8") as fh:
        json.dump(truth, fh)
    return {**paths, **truth, "roi_records": records}


def stream_fields_from_mdf(path: str | os.PathLike) -> dict:
    """The JSON stream-header ``fields`` of an MDF measurement: every dataset under the
    groups a stream header may carry (``recon.live.ALLOWED_PREFIXES``) with at most
    ``recon.live.MAX_NUMBERS_PER_FIELD`` values, as JSON values (what a bridge sends)."""
    import h5py

    from recon.live import ALLOWED_PREFIXES, MAX_FIELDS, MAX_NUMBERS_PER_FIELD

    fields: dict = {}

    def visit(name: str, obj) -> None:
        path = "/" + name
        if not isinstance(obj, h5py.Dataset) or not path.startswith(ALLOWED_PREFIXES) or len(fields) >= MAX_FIELDS:
            return
        if obj.size > MAX_NUMBERS_PER_FIELD or obj.dtype.kind not in "iufbSO":
            return
        value = obj[()]
        if isinstance(value, bytes):
            fields[path] = value.decode("utf-8", "replace")
        elif isinstance(value, np.ndarray):
            if value.dtype.kind in "SO":
                fields[path] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.ravel()]
            else:
                fields[path] = value.tolist()
        else:
            fields[path] = value.item() if hasattr(value, "item") else value

    with h5py.File(path, "r") as h5:
        h5.visititems(visit)
    return fields
