"""Live reconstruction engine: iron per region for every frame of a stream, as it arrives.

The engine is the offline pipeline (``recon.pipeline`` + ``recon.quantify``) cut into
what is fixed for a session and what each frame costs:

- fixed (``LiveEngine.build``): the calibration's selected rows (the same
  ``select_rows_within_budget`` choice and the same streaming block reader and
  ``preprocess.prepare_rows`` conventions as ``reconstruct_file``: system-matrix
  background correction, transfer-function plan, row weights), the regularised
  operator K = (AAᵀ + λI)⁻¹A (``recon.operator``, loaded from or saved to the
  operator cache under the key the offline fast solver uses), and the region
  functionals F = δ · W Kᵀ, W the GTM estimator of ``recon.quantify.region_weights``
  with each ROI's exact spread through this operator and the scanner background
  spectrum as two further columns (as ``recon.quantify.exact_spread`` does offline);
- per frame (``LiveEngine.push``): time data → conversion factor → rfft (period 0,
  as the pipeline) → the selected rows → background subtraction → weights → F·y:
  iron per region (ng). One rfft and one (2M × R) product per frame.

Background: the running mean of the stream's background frames seen so far (a frame
uses the background frames before it, the same in whatever blocks the frames come);
before the first one, the calibration's empty-bore mean (``notes`` says so). All of
it is linear, so it runs in region space: each frame's rows minus the calibration's
empty-bore mean are projected once, and the stream background is the running mean of
its frames' projections.

Noise: the per-frame standard deviation of each region's estimate, from the scatter
of the stream's background frames in region space (≥ ``MIN_BACKGROUND_FOR_SCATTER``
of them), else from the calibration's empty-bore frames scaled by
√(calibration averages / stream averages). The noise detection limit per region is
``recon.quantify.LOD_FACTOR`` (3.3) × that SD (ICH Q2(R2), as offline).

Spill-over: the functionals invert the calibration's own model of each region exactly, but
iron in the body never sits exactly as that model (sub-voxel position, shape), so part of a
region's iron leaks into its neighbours' estimates. On the simulator's clean streams (no
off-target iron) the leak into the lungs and liver was 0.2-0.7 % of the target iron in 2D
and 1-2 % in 3D: tens of detection limits at a cell-tracking dose, so a noise-only limit
"detects" off-target iron in every injection. ``spill`` (R, R) bounds it: ``spill[j, i]``
is the largest leak into region i's estimate per ng in region j when region j's model is
moved by half a voxel along each imaged axis (computed once with the functionals from the
calibration's rows, :func:`_spill_bound`). A region is detected when its iron exceeds
``detection_limits_ng``: the noise limit plus the spill-over bound of the other regions'
current iron (the positive part).

Everything here is provisional: the recording's offline reconstruction and
quantification are authoritative.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from recon import inputs, live_cache, preprocess, solvers
from recon.mdf import MDFFile
from recon.operator import ReconOperator
from recon.params import ReconParams
from recon.physics import IRON_MOLAR_MASS_G_PER_MOL
from recon.quantify import (
    DEFAULT_CALIBRATION_REL_UNCERTAINTY,
    LOD_FACTOR,
    Grid,
    detection_limits,
    region_weights,
    rois_for_quantification,
)

__all__ = [
    "FrameResults",
    "LiveEngine",
    "LiveStreamError",
    "StreamLayout",
    "mip",
    "parse_frequency_selection",
    "stream_frequency_selection",
    "REQUIRED_FIELDS",
]

REQUIRED_FIELDS = (
    "/acquisition/drivefield/baseFrequency",
    "/acquisition/drivefield/divider",
    "/acquisition/numAverages",
    "/acquisition/numPeriodsPerFrame",
    "/acquisition/receiver/numChannels",
    "/acquisition/receiver/numSamplingPoints",
    "/acquisition/receiver/bandwidth",
)
ALLOWED_PREFIXES = ("/study/", "/experiment/", "/scanner/", "/acquisition/", "/tracer/")
MAX_FIELDS = 200
MAX_NUMBERS_PER_FIELD = 4096
MAX_FIELD_DEPTH = 8
#: Samples per frame a stream may declare (J x C x V); the 3D Bruker frame is 161,568.
MAX_FRAME_SAMPLES = 2**24
DTYPES = ("int16", "int32", "float32", "float64")
#: The type of a stream of selected spectra (payload "spectra"): complex64, little-endian.
SPECTRA_DTYPE = "complex64"
#: Frequencies a spectra stream may select (its header lists them; a 3D frame has 26,929 bins).
MAX_SELECTED_FREQUENCIES = 2**16
#: Stream background frames needed before their scatter replaces the calibration's noise.
MIN_BACKGROUND_FOR_SCATTER = 5
#: Foreground frames kept (prepared rows) for ``image(last=k)``.
IMAGE_HISTORY = 16
STATE_FORMAT = 1


class LiveStreamError(Exception):
    """A stream the engine cannot take: ``code`` is "bad_stream_header", "system_matrix_mismatch",
    or, for a spectra stream's selection, "bad_frequency_selection", "frequency_out_of_range"
    or "frequency_selection_too_large"."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _bad(message: str) -> LiveStreamError:
    return LiveStreamError("bad_stream_header", message)


def _count_numbers(value: Any, path: str, depth: int = 0) -> int:
    """Numbers (and strings/bools) in a JSON value; refuses non-finite numbers and deep nesting."""
    if depth > MAX_FIELD_DEPTH:
        raise _bad(f"{path}: nested deeper than {MAX_FIELD_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return 1
    if isinstance(value, int):
        return 1
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(f"{path}: {value} is not a finite number")
        return 1
    if isinstance(value, list):
        total = 0
        for item in value:
            total += _count_numbers(item, path, depth + 1)
            if total > MAX_NUMBERS_PER_FIELD:
                raise _bad(f"{path}: more than {MAX_NUMBERS_PER_FIELD} values")
        return total
    raise _bad(f"{path}: {type(value).__name__} is not a JSON number, string, bool or list")


def _positive_int(fields: dict, path: str, limit: int) -> int:
    value = fields[path]
    if isinstance(value, list) and len(value) == 1:  # MDF scalars sometimes arrive as [n]
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise _bad(f"{path} must be a whole number, got {value!r}")
    if not 1 <= int(value) <= limit:
        raise _bad(f"{path} must be between 1 and {limit}, got {int(value)}")
    return int(value)


def _positive_float(fields: dict, path: str) -> float:
    value = fields[path]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _bad(f"{path} must be a finite number > 0, got {value!r}")
    return float(value)


def _numeric_array(value: Any, path: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError:
        raise _bad(f"{path} must be a regular (rectangular) list of numbers") from None
    if arr.dtype.kind not in "iuf" or arr.dtype == np.bool_:
        raise _bad(f"{path} must hold numbers only, got {value!r}"[:300])
    return arr


@dataclass(frozen=True)
class StreamLayout:
    """What a stream header says about its frames.

    periods J, channels C, samples V: a frame is (J, C, V) samples of ``dtype`` (time
    domain, little-endian). frame_duration_s = cycle × numAverages × J (cycle =
    /acquisition/drivefield/cycle, else lcm(dividers) / baseFrequency).
    data_conversion_factor : (C, 2) (a, b: volts = a · raw + b) or None.
    frequencies : a spectra stream's selected rfft bins (0-based, strictly increasing), or
    None for time-domain samples. A spectra frame is (J, C, K_sel) complex64: the
    unnormalised rfft of each period's V raw samples (before the conversion factor) at
    those bins, the convention of ``recon.mdf.MDFFile.spectra`` for stored spectra.
    """

    periods: int
    channels: int
    samples: int
    dtype: str
    base_frequency_hz: float
    dividers: tuple[int, ...]
    num_averages: int
    bandwidth_hz: float
    cycle_s: float
    frame_duration_s: float
    data_conversion_factor: np.ndarray | None = field(default=None, compare=False, repr=False)
    frequencies: tuple[int, ...] | None = None

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        last = self.samples if self.frequencies is None else len(self.frequencies)
        return (self.periods, self.channels, last)

    @property
    def is_spectra(self) -> bool:
        return self.frequencies is not None

    @property
    def frame_nbytes(self) -> int:
        j, c, x = self.frame_shape
        return j * c * x * np.dtype(self.dtype).itemsize

    @classmethod
    def from_fields(cls, fields: dict, dtype: str, frequency_selection: Any = None) -> StreamLayout:
        """Validate a stream header's MDF fields and sample type (LiveStreamError "bad_stream_header").

        ``frequency_selection`` (a spectra stream: the header's 1-based rfft bins, dtype
        "complex64"): validated by :func:`parse_frequency_selection` (its codes)."""
        if not isinstance(fields, dict):
            raise _bad(f"fields must be an object of MDF paths, got {type(fields).__name__}")
        spectra = frequency_selection is not None
        if spectra and dtype != SPECTRA_DTYPE:
            raise _bad(f"a spectra stream's dtype must be {SPECTRA_DTYPE!r}, got {dtype!r}")
        if not spectra and (not isinstance(dtype, str) or dtype not in DTYPES):
            raise _bad(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if len(fields) > MAX_FIELDS:
            raise _bad(f"{len(fields)} fields, at most {MAX_FIELDS} allowed")
        for path, value in fields.items():
            if not isinstance(path, str) or not path.startswith(ALLOWED_PREFIXES) or len(path) > 256:
                raise _bad(f"field {str(path)[:80]!r} is outside the allowed groups {list(ALLOWED_PREFIXES)}")
            _count_numbers(value, path)
        missing = [p for p in REQUIRED_FIELDS if p not in fields]
        if missing:
            raise _bad(f"required fields missing: {missing}")
        base = _positive_float(fields, "/acquisition/drivefield/baseFrequency")
        bandwidth = _positive_float(fields, "/acquisition/receiver/bandwidth")
        div = _numeric_array(fields["/acquisition/drivefield/divider"], "/acquisition/drivefield/divider")
        if div.ndim > 2 or div.size == 0 or div.size > 64:
            raise _bad(f"/acquisition/drivefield/divider must be D or D x F whole numbers, got shape {div.shape}")
        div2 = div.reshape(div.shape[0] if div.ndim else 1, -1)
        first = div2[:, 0]
        if np.any(first != np.round(first)) or np.any(first < 1) or np.any(first > 2**31):
            raise _bad(f"/acquisition/drivefield/divider must hold whole numbers >= 1, got {div.tolist()}")
        dividers = tuple(int(v) for v in first)
        averages = _positive_int(fields, "/acquisition/numAverages", 2**31)
        periods = _positive_int(fields, "/acquisition/numPeriodsPerFrame", 2**16)
        channels = _positive_int(fields, "/acquisition/receiver/numChannels", 64)
        samples = _positive_int(fields, "/acquisition/receiver/numSamplingPoints", 2**22)
        if periods * channels * samples > MAX_FRAME_SAMPLES:
            raise _bad(
                f"a frame of {periods} x {channels} x {samples} samples exceeds the limit of {MAX_FRAME_SAMPLES}"
            )
        if "/acquisition/drivefield/cycle" in fields:
            cycle = _positive_float(fields, "/acquisition/drivefield/cycle")
        else:
            cycle = math.lcm(*dividers) / base
        conv = None
        if "/acquisition/receiver/dataConversionFactor" in fields:
            path = "/acquisition/receiver/dataConversionFactor"
            arr = _numeric_array(fields[path], path).astype(np.float64)
            if arr.size != 2 * channels:
                raise _bad(f"{path} must be {channels} x 2 numbers (a, b per channel), got shape {arr.shape}")
            conv = arr.reshape(channels, 2)
            if not np.all(np.isfinite(conv)) or np.any(conv[:, 0] == 0):
                raise _bad(f"{path} must be finite with a != 0")
        frequencies = None
        if spectra:
            frequencies = tuple(int(k) for k in parse_frequency_selection(frequency_selection, samples))
        return cls(
            periods=periods,
            channels=channels,
            samples=samples,
            dtype=dtype,
            base_frequency_hz=base,
            dividers=dividers,
            num_averages=averages,
            bandwidth_hz=bandwidth,
            cycle_s=float(cycle),
            frame_duration_s=float(cycle) * averages * periods,
            data_conversion_factor=conv,
            frequencies=frequencies,
        )


def parse_frequency_selection(value: Any, samples: int) -> np.ndarray:
    """A spectra stream's ``frequency_selection`` (the header's JSON list of 1-based indices
    into the ``samples // 2 + 1`` rfft bins of a period, MDF's /measurement/frequencySelection
    convention) as 0-based bins (int64). Strictly increasing, non-empty, at most
    ``MAX_SELECTED_FREQUENCIES``; each refusal a LiveStreamError with its own code."""
    k = int(samples) // 2 + 1
    if not isinstance(value, list) or not value:
        raise LiveStreamError(
            "bad_frequency_selection", "frequency_selection must be a non-empty list of 1-based rfft bin indices."
        )
    if len(value) > MAX_SELECTED_FREQUENCIES:
        raise LiveStreamError(
            "frequency_selection_too_large",
            f"frequency_selection lists {len(value)} frequencies; at most {MAX_SELECTED_FREQUENCIES}.",
        )
    if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise LiveStreamError("bad_frequency_selection", "frequency_selection must hold whole numbers only.")
    sel = np.asarray(value, dtype=np.int64)
    if (np.diff(sel) <= 0).any():
        raise LiveStreamError(
            "bad_frequency_selection", "frequency_selection must be strictly increasing (no repeats, sorted)."
        )
    if sel[0] < 1 or sel[-1] > k:
        raise LiveStreamError(
            "frequency_out_of_range",
            f"frequency_selection holds {int(sel[0])} to {int(sel[-1])}: 1-based bins are 1..{k} "
            f"(numSamplingPoints {samples} // 2 + 1).",
        )
    return sel - 1


@dataclass(frozen=True)
class FrameResults:
    """iron_ng, uncertainty_ng : (n, R) float64 (NaN on background frames); is_background : (n,)."""

    iron_ng: np.ndarray
    uncertainty_ng: np.ndarray
    is_background: np.ndarray


class _StreamHeader:
    """The stream's drive and receive settings with the attribute names of ``MDFFile``,
    so the recon pair check (``recon.inputs.check_compatible``) compares them."""

    def __init__(self, layout: StreamLayout):
        self.num_receive_channels = layout.channels
        self.num_sampling_points = layout.samples
        self.base_frequency_hz = layout.base_frequency_hz
        self.dividers = np.asarray(layout.dividers, dtype=np.int64)


class _RecordingCalibration:
    """An open calibration whose ``system_matrix`` reads are passed through, keeping the
    background frames read with them (the empty-bore rows the noise estimate needs)."""

    def __init__(self, smf: MDFFile):
        self.smf = smf
        self.background_parts: list[np.ndarray] = []

    def system_matrix(self, frequencies=None, channels=None, period: int = 0):
        s, b = self.smf.system_matrix(frequencies=frequencies, channels=channels, period=period)
        self.background_parts.append(np.asarray(b[0]))
        return s, b


def _stack(rows: np.ndarray) -> np.ndarray:
    """(n, M) complex → (n, 2M) float64 [Re | Im] (``recon.solvers.stack_real`` order)."""
    return np.concatenate([rows.real, rows.imag], axis=-1)


def mip(volume: np.ndarray, axis: int = 2) -> np.ndarray:
    """Maximum-intensity projection of an (nx, ny, nz) volume along ``axis`` (2D)."""
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be (nx, ny, nz), got shape {vol.shape}")
    return vol.max(axis=axis)


class LiveEngine:
    """Region iron per frame for one stream against one calibration (see the module docstring).

    Attributes: region_names, region_kinds (lists), size (nx, ny, nz), layout, params,
    notes (list of str), frames_seen, background_frames_seen.
    """

    def __init__(
        self,
        *,
        layout: StreamLayout,
        params: ReconParams,
        operator: ReconOperator,
        functionals: np.ndarray,
        selection: preprocess.RowSelection,
        row_weights: np.ndarray,
        reference_rows: np.ndarray,
        calibration_noise_sd: np.ndarray,
        region_names: list[str],
        region_kinds: list[str],
        size: tuple[int, int, int],
        ng_per_unit: float,
        fingerprint: str,
        notes: list[str],
        spill: np.ndarray | None = None,
    ):
        self.layout = layout
        r = len(region_names)
        self.spill = np.zeros((r, r)) if spill is None else np.asarray(spill, dtype=np.float64)
        self.params = params
        # The operator serves images only (metrics use the functionals); from the cache it is
        # memory-mapped, so its pages are read on the first image, not at the start.
        self.operator = operator
        self._f = functionals  # (2M, R) float64: iron (ng) = stack(w · (u - ref)) @ F
        self.selection = selection
        self._weights = row_weights
        self._ref = reference_rows  # (M,) complex: the calibration empty-bore mean (zeros without)
        self._cal_sd = calibration_noise_sd  # (R,) per-frame SD from the calibration's empty bore
        self.region_names = list(region_names)
        self.region_kinds = list(region_kinds)
        self.size = size
        self._ng_per_unit = ng_per_unit  # ng Fe per voxel at operator output 1
        self.fingerprint = fingerprint
        self.notes = list(notes)
        self._positions: np.ndarray | None = None
        if layout.frequencies is not None:
            # Where each selected row's frequency sits in the stream's spectra.
            stream = np.asarray(layout.frequencies, dtype=np.int64)
            pos = np.searchsorted(stream, selection.frequency)
            pos = np.minimum(pos, stream.size - 1)
            missing = stream[pos] != selection.frequency
            if missing.any():
                raise LiveStreamError(
                    "system_matrix_mismatch",
                    f"{int(np.unique(selection.frequency[missing]).size)} of the live rows' frequencies are not in "
                    f"the stream's frequency selection ({int(missing.sum())} of {selection.num_rows} rows): "
                    "send the frequencies the live session asks for (its frequency_selection)",
                )
            self._positions = pos
        self._reset()

    def _reset(self) -> None:
        r, m = len(self.region_names), self.selection.num_rows
        self.frames_seen = 0
        self.background_frames_seen = 0
        self._bg_sum_r = np.zeros(r)
        self._bg_sumsq_r = np.zeros(r)
        self._bg_sum_rows = np.zeros(m, dtype=np.complex128)
        self._history: deque[np.ndarray] = deque(maxlen=IMAGE_HISTORY)

    # ------------------------------------------------------------------ build

    @classmethod
    def build(
        cls,
        calibration_path: str | os.PathLike,
        layout: StreamLayout,
        roi_records: list[dict],
        *,
        operator_cache_dir: str | os.PathLike | None = None,
        memory_budget_mb: float | None = None,
        params: ReconParams | None = None,
        calibration_sha256: str | None = None,
    ) -> LiveEngine:
        """Check the stream against the calibration, then load (or compute and cache) the
        selected rows, the operator and the region functionals (:func:`prepare`).

        ``calibration_sha256``: the calibration file's SHA-256 as registered (the platform
        stores it); hashed from the file when not given. With ``operator_cache_dir`` a
        second session on the same calibration, plan and ROIs reads only the calibration's
        header and a small cache entry; the operator is memory-mapped on the first image.

        Raises LiveStreamError("system_matrix_mismatch") when the stream's drive or receive
        settings differ from the calibration's, or the calibration needs a transfer function
        the stream cannot give; ValueError for an unusable calibration, plan or ROI list.
        """
        params = live_plan(params, memory_budget_mb)
        _check_rois(roi_records)
        notes: list[str] = [
            "provisional: live estimate; the recording's offline reconstruction is authoritative",
            "period 0 of each frame used (as the offline pipeline)" if layout.periods > 1 else "",
        ]
        notes = [n for n in notes if n]
        with MDFFile(calibration_path) as smf:
            inputs.check_calibration(smf)
            try:
                # the pair check of reconstruct_file, on the header's four compared attributes
                inputs.check_compatible(smf, cast("MDFFile", _StreamHeader(layout)), "stream")
            except inputs.InputError as exc:
                raise LiveStreamError("system_matrix_mismatch", str(exc)) from None
            try:
                tf_plan = preprocess.transfer_function_plan(
                    smf.transfer_function, smf.layout["isTransferFunctionCorrected"], None, False
                )
            except ValueError as exc:
                raise LiveStreamError(
                    "system_matrix_mismatch",
                    f"the stream sends raw samples without a transfer function: {exc}",
                ) from None
            if tf_plan.calibration_divisor is not None:  # pragma: no cover - refused above (stream has no TF)
                raise LiveStreamError("system_matrix_mismatch", "the calibration needs a transfer function")
        prepared = prepare(
            calibration_path,
            roi_records,
            params=params,
            cache_dir=operator_cache_dir,
            calibration_sha256=calibration_sha256,
        )
        reg = prepared.regions
        if reg is None:  # pragma: no cover - roi_records were given
            raise ValueError("no ROIs: live monitoring needs at least one region")
        notes += prepared.notes
        # Per-frame noise from the calibration's empty-bore frames, scaled to the stream's averaging.
        cal_sd = reg.calibration_sd * math.sqrt(prepared.calibration_averages / layout.num_averages)
        if np.all(np.isfinite(cal_sd)):
            notes.append(
                f"until {MIN_BACKGROUND_FOR_SCATTER} stream background frames: noise from the calibration's "
                f"{prepared.calibration_background_frames} empty-bore frames x "
                f"sqrt({prepared.calibration_averages}/{layout.num_averages} averages)"
            )
        if prepared.has_reference:
            notes.append("until the first stream background frame: background = the calibration's empty-bore mean")
        else:
            notes.append("until the first stream background frame: no background subtracted (calibration has none)")
        fingerprint = json.dumps(
            {
                "key": prepared.operator_key,
                "rois": reg.names,
                "roi_records": hashlib.sha256(
                    json.dumps(list(roi_records), sort_keys=True, default=str).encode()
                ).hexdigest(),
                "layout": list(layout.frame_shape),
                **(
                    {}
                    if layout.frequencies is None
                    else {"frequencies": hashlib.sha256(np.asarray(layout.frequencies, np.int64).tobytes()).hexdigest()}
                ),
            },
            sort_keys=True,
        )
        return cls(
            layout=layout,
            params=params,
            operator=prepared.operator,
            functionals=reg.functionals,
            selection=prepared.selection,
            row_weights=prepared.row_weights,
            reference_rows=prepared.reference,
            calibration_noise_sd=cal_sd,
            region_names=reg.names,
            region_kinds=reg.kinds,
            size=prepared.size,
            ng_per_unit=reg.ng_per_unit,
            fingerprint=fingerprint,
            notes=notes,
            spill=reg.spill,
        )

    # ------------------------------------------------------------------ noise

    @property
    def noise_sd_ng(self) -> np.ndarray:
        """(R,) current per-frame noise SD of each region's estimate (ng), background
        subtraction included; NaN when nothing to measure it from."""
        n = self.background_frames_seen
        return self._noise_for(np.array([n]), self._bg_sum_r[None, :], self._bg_sumsq_r[None, :])[0]

    @property
    def detection_limit_ng(self) -> np.ndarray:
        """(R,) noise LOD per region for one frame: 3.3 × the per-frame noise SD (recon.quantify.LOD_FACTOR)."""
        return LOD_FACTOR * self.noise_sd_ng

    def detection_limits_ng(self, iron: np.ndarray, frames: int = 1) -> np.ndarray:
        """Detection limits of ``iron`` (R,) or (n, R) (each the mean of ``frames`` frames): the
        noise LOD plus the spill-over bound of the other regions' iron (:func:`detection_limits`)."""
        return detection_limits(self.detection_limit_ng, self.spill, np.asarray(iron, dtype=np.float64), frames)

    # ------------------------------------------------------------------ frames

    def _rows(self, frames: np.ndarray) -> np.ndarray:
        """(n, M) complex128: selected rows of period 0 of each frame, conversion applied.

        The rfft (the main per-frame cost) runs on the raw samples, in float32 when they
        are int16 or float32 (exact inputs; its rounding, ~1e-7 of the largest bin, is far
        below the receiver noise of every bin) and in float64 otherwise; the conversion
        a · raw + b is applied to the selected rows after it (a scales every bin, b adds
        b · V to the DC bin), which is the rfft of the converted samples."""
        import scipy.fft

        raw = frames[:, 0]
        sel = self.selection
        if self._positions is not None:  # a spectra stream: the rfft was done at the scanner
            rows = raw[:, sel.channel, self._positions].astype(np.complex128)
        else:
            work = np.float32 if raw.dtype in (np.int16, np.float32) else np.float64
            rows = scipy.fft.rfft(raw.astype(work, copy=False), axis=-1, workers=1)[:, sel.channel, sel.frequency]
            rows = rows.astype(np.complex128)
        conv = self.layout.data_conversion_factor
        if conv is not None:
            rows *= conv[sel.channel, 0][None, :]
            dc = sel.frequency == 0
            if dc.any():
                rows[:, dc] += (conv[sel.channel[dc], 1] * self.layout.samples)[None, :]
        return rows

    def push(self, frames: np.ndarray, is_background: np.ndarray) -> FrameResults:
        """Iron per region for a block of frames (n, J, C, V) raw samples, or (n, J, C, K_sel)
        complex spectra for a spectra stream; background frames update the background (their
        result rows are NaN)."""
        arr = np.asarray(frames)
        bg = np.asarray(is_background)
        if arr.ndim != 4 or arr.shape[1:] != self.layout.frame_shape:
            raise ValueError(
                f"frames have shape {arr.shape}, expected (n, {', '.join(map(str, self.layout.frame_shape))})"
            )
        if bg.shape != (arr.shape[0],) or bg.dtype != np.bool_:
            raise ValueError(f"is_background must be ({arr.shape[0]},) bool, got {bg.dtype} {bg.shape}")
        if arr.dtype.kind not in ("c" if self.layout.is_spectra else "iuf"):
            raise ValueError(
                f"frames must be {'complex spectra' if self.layout.is_spectra else 'numbers'}, got dtype {arr.dtype}"
            )
        if arr.dtype.kind in "fc":
            finite = np.isfinite(arr)
            if not finite.all():
                bad = np.flatnonzero(~finite.reshape(arr.shape[0], -1).all(axis=1))
                raise ValueError(
                    f"frames hold {int(arr.size - np.count_nonzero(finite))} non-finite samples (NaN or inf) "
                    f"in block frame(s) {bad[:10].tolist()}: nothing processed"
                )
        n = arr.shape[0]
        r = len(self.region_names)
        if n == 0:
            empty = np.zeros((0, r))
            return FrameResults(empty, empty.copy(), bg.copy())
        d = (self._rows(arr) - self._ref[None, :]) * self._weights[None, :]  # (n, M)
        proj = _stack(d) @ self._f  # (n, R): iron before the stream background
        # Background known to each frame: stream background frames before it (this block included).
        before = np.cumsum(bg) - bg  # background frames of this block before frame i
        cum_r = np.cumsum(np.where(bg[:, None], proj, 0.0), axis=0) - np.where(bg[:, None], proj, 0.0)
        count = self.background_frames_seen + before
        iron = np.full((n, r), np.nan)
        unc = np.full((n, r), np.nan)
        fg = ~bg
        has = count > 0
        bg_mean_r = np.zeros((n, r))
        bg_mean_r[has] = (self._bg_sum_r[None, :] + cum_r)[has] / count[has, None]
        iron[fg] = proj[fg] - bg_mean_r[fg]
        # noise per frame, as known at that frame
        sq = np.where(bg[:, None], proj**2, 0.0)
        sd = self._noise_for(
            count, self._bg_sum_r[None, :] + cum_r, self._bg_sumsq_r[None, :] + np.cumsum(sq, axis=0) - sq
        )
        unc[fg] = np.hypot(sd[fg], DEFAULT_CALIBRATION_REL_UNCERTAINTY * iron[fg])
        # images: the prepared rows of the foreground frames (background subtracted as for the iron)
        if fg.any():
            bg_rows_mask = bg[:, None]
            cum_rows = np.cumsum(np.where(bg_rows_mask, d, 0), axis=0) - np.where(bg_rows_mask, d, 0)
            for i in np.flatnonzero(fg)[-IMAGE_HISTORY:]:
                rows_i = d[i]
                if count[i] > 0:
                    rows_i = rows_i - (self._bg_sum_rows + cum_rows[i]) / count[i]
                self._history.append(_stack(rows_i).astype(np.float32))
        if bg.any():
            self._bg_sum_r = self._bg_sum_r + proj[bg].sum(axis=0)
            self._bg_sumsq_r = self._bg_sumsq_r + (proj[bg] ** 2).sum(axis=0)
            self._bg_sum_rows = self._bg_sum_rows + d[bg].sum(axis=0)
            self.background_frames_seen += int(bg.sum())
        self.frames_seen += n
        return FrameResults(iron, unc, bg.copy())

    def _noise_for(self, count: np.ndarray, s: np.ndarray, ss: np.ndarray) -> np.ndarray:
        """(n, R) per-frame noise SD with ``count`` (n,) background frames whose region
        projections sum to ``s`` and their squares to ``ss`` (n, R)."""
        c = np.asarray(count, dtype=np.float64)[:, None]
        scatter = np.sqrt(
            np.maximum((ss - s**2 / np.maximum(c, 1)) / np.maximum(c - 1, 1), 0.0) * (1 + 1 / np.maximum(c, 1))
        )
        calib = self._cal_sd[None, :] * np.sqrt(1 + 1 / np.maximum(c, 1)) * np.where(c > 0, 1.0, 1 / np.sqrt(2))
        return np.where(c >= MIN_BACKGROUND_FOR_SCATTER, scatter, calib)

    # ------------------------------------------------------------------ images

    def image(self, last: int = 1) -> np.ndarray:
        """(nx, ny, nz) ng Fe per voxel: the mean of the last ``last`` foreground frames
        (at most ``IMAGE_HISTORY``) reconstructed by the operator, clamped at 0 as the
        pipeline's display frames are; zeros before any foreground frame."""
        if int(last) != last or last < 1:
            raise ValueError(f"last must be a whole number >= 1, got {last!r}")
        if not self._history:
            return np.zeros(self.size)
        rows = np.mean(np.stack(list(self._history)[-int(last) :]), axis=0)
        x = np.asarray(self.operator.apply(rows[None, :].astype(self.operator.matrix.dtype)))[0]
        x = np.maximum(x.astype(np.float64), 0.0) * self._ng_per_unit
        return x.reshape(self.size, order="F")

    # ------------------------------------------------------------------ state

    def state(self) -> bytes:
        """The running background, noise sums, counts and image history: restore() of these
        bytes into an engine built the same way continues with identical results."""
        buf = io.BytesIO()
        hist = (
            np.stack(list(self._history)) if self._history else np.zeros((0, 2 * self.selection.num_rows), np.float32)
        )
        np.savez(
            buf,
            meta=np.frombuffer(
                json.dumps(
                    {
                        "format": STATE_FORMAT,
                        "fingerprint": self.fingerprint,
                        "frames_seen": self.frames_seen,
                        "background_frames_seen": self.background_frames_seen,
                    }
                ).encode(),
                dtype=np.uint8,
            ),
            bg_sum_r=self._bg_sum_r,
            bg_sumsq_r=self._bg_sumsq_r,
            bg_sum_rows=self._bg_sum_rows,
            history=hist,
        )
        return buf.getvalue()

    def restore(self, state: bytes) -> None:
        """Continue from :meth:`state` (ValueError for bytes of another engine or format)."""
        try:
            with np.load(io.BytesIO(bytes(state)), allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes().decode())
                arrays = {k: np.array(z[k]) for k in ("bg_sum_r", "bg_sumsq_r", "bg_sum_rows", "history")}
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a live engine state: {exc}") from None
        if meta.get("format") != STATE_FORMAT or meta.get("fingerprint") != self.fingerprint:
            raise ValueError("the state belongs to another calibration, ROI set, stream layout or format")
        r, m = len(self.region_names), self.selection.num_rows
        if (
            arrays["bg_sum_r"].shape != (r,)
            or arrays["bg_sumsq_r"].shape != (r,)
            or arrays["bg_sum_rows"].shape != (m,)
            or arrays["history"].ndim != 2
            or arrays["history"].shape[1] != 2 * m
        ):
            raise ValueError("the state's arrays do not fit this engine")
        self.frames_seen = int(meta["frames_seen"])
        self.background_frames_seen = int(meta["background_frames_seen"])
        self._bg_sum_r = arrays["bg_sum_r"].astype(np.float64)
        self._bg_sumsq_r = arrays["bg_sumsq_r"].astype(np.float64)
        self._bg_sum_rows = arrays["bg_sum_rows"].astype(np.complex128)
        self._history = deque((h.astype(np.float32) for h in arrays["history"]), maxlen=IMAGE_HISTORY)


# ---------------------------------------------------------------------------- preparation


def live_plan(params: ReconParams | None = None, memory_budget_mb: float | None = None) -> ReconParams:
    """The live engine's plan: the fast solver (an explicit operator) unless one is given."""
    params = ReconParams(solver="fast") if params is None else params
    if memory_budget_mb is not None:
        params = params.replace(memory_budget_bytes=int(memory_budget_mb * 2**20))
    if params.weighting == "whiten":
        raise ValueError("weighting='whiten' needs the stream's background noise before the first frame: not live")
    return params


def _check_rois(roi_records: list[dict]) -> None:
    if not roi_records:
        raise ValueError("no ROIs: live monitoring needs at least one region")
    names = [str(rec.get("name")) if isinstance(rec, dict) else "" for rec in roi_records]
    if len(set(names)) != len(names):
        raise ValueError(f"ROI names must be unique (results are reported by name), got {names}")


@dataclass(frozen=True)
class PreparedRegions:
    """An ROI set's part of the engine: names, kinds, functionals F (2M, R) float64 (iron ng
    = stack(w · (u − ref)) @ F), calibration_sd (R,) the per-frame SD of each region from the
    calibration's empty-bore frames at the calibration's averaging (NaN without them), ng_per_unit."""

    names: list[str]
    kinds: list[str]
    functionals: np.ndarray
    calibration_sd: np.ndarray
    ng_per_unit: float
    spill: np.ndarray  # (R, R): the bound on region i's estimate per ng in region j (spill[j, i]); 0 diagonal


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` returns: the calibration's part (selection, weights, reference
    spectrum, grid, operator) and, given ROIs, the regions' part."""

    selection: preprocess.RowSelection
    row_weights: np.ndarray
    reference: np.ndarray
    has_reference: bool
    size: tuple[int, int, int]
    calibration_averages: int
    calibration_background_frames: int
    operator_key: str
    operator: ReconOperator
    regions: PreparedRegions | None
    notes: list[str]


@dataclass
class _Rows:
    """The calibration entry (everything but A)."""

    key: str
    selection: preprocess.RowSelection
    weights: np.ndarray
    reference: np.ndarray | None
    bg_rows: np.ndarray | None
    lambda_abs: float
    operator_key: str
    size: tuple[int, int, int]
    fov: tuple[float, float, float]
    center: tuple[float, float, float]
    delta: float
    cal_averages: int
    max_rows: int
    notes: list[str]

    def save(self, cache_dir) -> None:
        m = self.selection.num_rows
        live_cache.save_entry(
            cache_dir,
            f"live-rows-{self.key}",
            {
                "channel": np.asarray(self.selection.channel, np.int64),
                "frequency": np.asarray(self.selection.frequency, np.int64),
                "frequency_hz": np.asarray(self.selection.frequency_hz, np.float64),
                "snr": np.asarray(self.selection.snr, np.float64),
                "weights": np.asarray(self.weights, np.float64),
                "reference": np.zeros(0, np.complex128) if self.reference is None else self.reference,
                "bg_rows": np.zeros((m, 0), np.complex128) if self.bg_rows is None else self.bg_rows,
            },
            {
                "candidates": int(self.selection.candidates),
                "lambda_abs": float(self.lambda_abs).hex(),
                "operator_key": self.operator_key,
                "size": list(self.size),
                "fov": list(self.fov),
                "center": list(self.center),
                "delta": float(self.delta).hex(),
                "cal_averages": self.cal_averages,
                "max_rows": self.max_rows,
                "has_reference": self.reference is not None,
                "has_bg_rows": self.bg_rows is not None,
                "notes": self.notes,
            },
        )

    @classmethod
    def load(cls, cache_dir, key: str) -> _Rows | None:
        entry = live_cache.load_entry(cache_dir, f"live-rows-{key}")
        if entry is None:
            return None
        arr, meta = entry
        try:
            sel = preprocess.RowSelection(
                arr["channel"], arr["frequency"], arr["frequency_hz"], arr["snr"], int(meta["candidates"])
            )
            size = tuple(int(v) for v in meta["size"])
            fov = tuple(float(v) for v in meta["fov"])
            center = tuple(float(v) for v in meta["center"])
            return cls(
                key=key,
                selection=sel,
                weights=arr["weights"],
                reference=arr["reference"] if meta["has_reference"] else None,
                bg_rows=arr["bg_rows"] if meta["has_bg_rows"] else None,
                lambda_abs=float.fromhex(meta["lambda_abs"]),
                operator_key=str(meta["operator_key"]),
                size=(size[0], size[1], size[2]),
                fov=(fov[0], fov[1], fov[2]),
                center=(center[0], center[1], center[2]),
                delta=float.fromhex(meta["delta"]),
                cal_averages=int(meta["cal_averages"]),
                max_rows=int(meta["max_rows"]),
                notes=[str(n) for n in meta["notes"]],
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return None


def _select_rows(smf: MDFFile, num_voxels: int, plans: list[ReconParams]) -> list:
    """The offline pipeline's row choice (SNR, band, budget) of an open calibration for each
    plan: [(RowSelection, RowBudget)], the SNR read (or computed) once."""
    from recon.pipeline import _calibration_snr_in_blocks, select_rows_within_budget

    snr = inputs.full_axis_snr(smf)
    if snr is None:
        snr = _calibration_snr_in_blocks(smf, num_voxels)
    available = np.zeros(smf.num_frequencies, dtype=bool)
    available[smf.available_frequencies] = True
    freqs = np.asarray(smf.frequencies_hz, dtype=np.float64)
    return [
        select_rows_within_budget(snr, freqs, plan, smf.num_receive_channels, num_voxels, available=available)
        for plan in plans
    ]


_STREAM_SELECTIONS: dict[str, list[int]] = {}
_STREAM_SELECTIONS_KEPT = 64


def stream_frequency_selection(
    calibration_path: str | os.PathLike,
    *,
    params: ReconParams | None = None,
    offline_params: ReconParams | None = None,
    calibration_sha256: str | None = None,
) -> list[int]:
    """The frequencies a spectra stream must carry for this calibration: 1-based indices
    into the V/2+1 rfft bins (sorted, the ``frequency_selection`` of a stream header), the
    union over channels of the rows the live engine uses (``live_plan(params)``) and of the
    rows the offline pipeline selects with ``offline_params`` (default ``ReconParams()``,
    the scan pipeline's). The offline pipeline reconstructs a frequency-selected scan from
    the frequencies both files store and picks its rows among them by SNR: with every row it
    would pick present, it picks the same ones, so a spectra recording quantifies as the
    samples recording of the same frames.

    Pure and cheap: the calibration's SNR (stored, else from its empty-bore frames) and the
    row budgets; remembered per calibration SHA-256 and plans in this process."""
    from recon.checksum import sha256_file

    live = live_plan(params)
    offline = ReconParams() if offline_params is None else offline_params
    sha = calibration_sha256 or sha256_file(calibration_path)
    key = hashlib.sha256(
        json.dumps([sha, live.as_dict(), offline.as_dict()], sort_keys=True, default=str).encode()
    ).hexdigest()
    if key in _STREAM_SELECTIONS:
        return list(_STREAM_SELECTIONS[key])
    with MDFFile(calibration_path) as smf:
        inputs.check_calibration(smf)
        size = tuple(int(v) for v in smf.calibration_size or ())
        choices = _select_rows(smf, int(np.prod(size)), [live, offline])
    union = np.unique(np.concatenate([selection.frequency for selection, _ in choices]))
    result = [int(k) + 1 for k in union]
    if len(_STREAM_SELECTIONS) >= _STREAM_SELECTIONS_KEPT:
        _STREAM_SELECTIONS.pop(next(iter(_STREAM_SELECTIONS)))
    _STREAM_SELECTIONS[key] = result
    return list(result)


def _read_rows(calibration_path, sha: str, key: str, params: ReconParams) -> tuple[_Rows, np.ndarray]:
    """Read the calibration's selected rows (the offline pipeline's selection, reader and
    preparation): the calibration entry and A (2M, P) in ``params.dtype``, writeable."""
    from recon.operator import cache_key
    from recon.pipeline import _stack_rows_from_calibration

    with MDFFile(calibration_path) as smf:
        inputs.check_calibration(smf)
        size = tuple(int(v) for v in smf.calibration_size or ())
        size3 = (size[0], size[1], size[2])
        p = int(np.prod(size3))
        fov = np.asarray(smf.field_of_view_m if smf.field_of_view_m is not None else np.ones(3), dtype=float)
        center = np.asarray(
            smf.field_of_view_center_m if smf.field_of_view_center_m is not None else np.zeros(3), dtype=float
        )
        delta = float(smf.tracer_concentration_mol_per_l or 0.0)
        cal_averages = int(smf.field("/acquisition/numAverages", 1) or 1)
        ((selection, budget),) = _select_rows(smf, p, [params])
        m = selection.num_rows
        recorder = _RecordingCalibration(smf)
        tf_s = smf.transfer_function
        # The stream's frames are not known yet: one zero frame stands in for the
        # measurement (A does not depend on it; its y is discarded).
        a, _, _, weights, prep_notes, sm_bg_mean = _stack_rows_from_calibration(
            recorder,
            selection,
            np.zeros((1, m), dtype=np.complex128),
            np.zeros(1, dtype=bool),
            params.replace(background="none", frames=None, average=1),
            p,
            None,
            None if tf_s is None else tf_s[selection.channel, selection.frequency],
            None,
            (smf.layout["isTransferFunctionCorrected"], False),
            None,
        )
        bg_rows = np.concatenate(recorder.background_parts) if recorder.background_parts else None
    lam = solvers.absolute_lambda(a, params.lambda_)
    op_key = cache_key(
        system_matrix_sha256=sha,
        lambda_abs=lam,
        params=params.as_dict(),
        channel=selection.channel,
        frequency=selection.frequency,
        row_weights=weights,
        extra={"transfer_functions": [tf_s is not None, False, False, False]},
    )
    rows = _Rows(
        key=key,
        selection=selection,
        weights=np.asarray(weights, dtype=np.float64),
        reference=None if sm_bg_mean is None else np.asarray(sm_bg_mean, dtype=np.complex128),
        bg_rows=None if bg_rows is None or bg_rows.shape[-1] < 1 else np.asarray(bg_rows, dtype=np.complex128),
        lambda_abs=lam,
        operator_key=op_key,
        size=size3,
        fov=(float(fov[0]), float(fov[1]), float(fov[2])),
        center=(float(center[0]), float(center[1]), float(center[2])),
        delta=delta,
        cal_averages=cal_averages,
        max_rows=int(budget.max_rows),
        notes=[n for n in prep_notes if n.startswith(("system matrix", "transfer function"))],
    )
    return rows, a


def prepare(
    calibration_path: str | os.PathLike,
    roi_records: list[dict] | None,
    *,
    params: ReconParams | None = None,
    cache_dir: str | os.PathLike | None = None,
    calibration_sha256: str | None = None,
) -> Prepared:
    """Everything a live engine needs that depends only on the calibration, the plan and the
    ROI set, from ``cache_dir`` when it holds it (``recon.live_cache``), else computed and
    stored there: the selected rows and their preparation (one read of the calibration's
    rows), the operator (``recon.operator``, memory-mapped when loaded) and, given
    ``roi_records``, the region functionals and the calibration noise per region.

    ``roi_records=None`` warms the calibration's part only (at registration: no ROIs yet).
    ``calibration_sha256``: the file's registered SHA-256 (hashed from the file when None).
    """
    from recon.checksum import sha256_file

    params = live_plan(params)
    if roi_records is not None:
        _check_rois(roi_records)
    sha = calibration_sha256 or sha256_file(calibration_path)
    key = live_cache.calibration_key(sha, params.as_dict())
    if cache_dir is None:
        return _prepare(calibration_path, roi_records, params, None, sha, key)
    # One preparation of a calibration at a time across processes (the session's preparation,
    # the worker's build, an idle worker's warm-up): the second waits, then finds the cache.
    with live_cache.exclusive(cache_dir, f"live-rows-{key}"):
        return _prepare(calibration_path, roi_records, params, cache_dir, sha, key)


def _prepare(calibration_path, roi_records, params: ReconParams, cache_dir, sha: str, key: str) -> Prepared:
    notes: list[str] = []
    rows = _Rows.load(cache_dir, key) if cache_dir is not None else None
    a: np.ndarray | None = None
    if rows is None:
        rows, a = _read_rows(calibration_path, sha, key, params)
        if cache_dir is not None:
            live_cache.save_array(cache_dir, f"live-rows-{key}", a)
            rows.save(cache_dir)
    else:
        notes.append(f"selected calibration rows loaded from cache {key[:12]}")
    notes = rows.notes + notes
    op = ReconOperator.load(cache_dir, rows.operator_key, mmap=True) if cache_dir is not None else None
    if op is not None:
        notes.append(f"reconstruction operator loaded from cache {rows.operator_key[:12]} (memory-mapped)")
    regions: PreparedRegions | None = None
    rkey = live_cache.regions_key(key, list(roi_records)) if roi_records is not None else None
    if rkey is not None and cache_dir is not None and op is not None:
        regions = _load_regions(cache_dir, rkey, rows.selection.num_rows)
        if regions is not None:
            notes.append(f"region functionals loaded from cache {rkey[:12]}")

    def rows_matrix(writeable: bool) -> np.ndarray:
        nonlocal a
        if a is None and cache_dir is not None:
            a = live_cache.load_array(cache_dir, f"live-rows-{key}", mmap=not writeable)
        if a is None:  # the cached A is missing or damaged: read the calibration again
            _, a = _read_rows(calibration_path, sha, key, params)
            if cache_dir is not None:
                live_cache.save_array(cache_dir, f"live-rows-{key}", a)
        if writeable and not a.flags.writeable:
            a = np.array(a)
        return a

    grid = Grid(rows.size, rows.fov, rows.center)
    rois = rois_for_quantification(list(roi_records), grid) if roi_records is not None and regions is None else None
    signals = bg_signal = shifted = None
    if rois is not None:
        mat = rows_matrix(writeable=False)
        chi = np.stack([r.signal for r in rois])
        signals = np.ascontiguousarray((mat @ chi.T.astype(mat.dtype)).T)  # (R, 2M): each ROI's noise-free rows
        shifted = _shifted_signals(mat, list(roi_records or []), grid)
        if rows.reference is not None:
            b = rows.reference * rows.weights
            bg_signal = _stack(np.stack([b, 1j * b])).astype(mat.dtype)
    if op is None:
        op = ReconOperator.build(rows_matrix(writeable=True), rows.lambda_abs, overwrite_a=True, key=rows.operator_key)
        if cache_dir is not None:
            op.save(cache_dir, rows.operator_key)
            notes.append(f"reconstruction operator built and cached as {rows.operator_key[:12]}")
    a = None
    if rois is not None and signals is not None and rkey is not None:
        spread = op.apply(signals).astype(np.float64)
        bg_columns = None if bg_signal is None else op.apply(bg_signal).astype(np.float64)
        w = region_weights(grid, rois, spread=spread, background_columns=bg_columns)  # (R, P) ng per mol/L
        functionals = op.region_functionals(w, scale=rows.delta).transposed.astype(np.float64)  # (2M, R)
        spill = _spill_bound(shifted, functionals, len(rois))
        cal_sd = np.full(len(rois), np.nan)
        if rows.bg_rows is not None and rows.bg_rows.shape[-1] >= 2:
            centred = (rows.bg_rows - rows.bg_rows.mean(axis=-1, keepdims=True)) * rows.weights[:, None]
            cal_sd = (_stack(centred.T) @ functionals).std(axis=0, ddof=1)
        voxel_l = float(np.prod(np.asarray(rows.fov) / np.asarray(rows.size))) * 1e3
        regions = PreparedRegions(
            names=[r.name for r in rois],
            kinds=[r.kind for r in rois],
            functionals=functionals,
            calibration_sd=cal_sd,
            ng_per_unit=rows.delta * voxel_l * IRON_MOLAR_MASS_G_PER_MOL * 1e9,
            spill=spill,
        )
        if cache_dir is not None:
            live_cache.save_entry(
                cache_dir,
                f"live-regions-{rkey}",
                {"functionals": functionals, "calibration_sd": cal_sd, "spill": spill},
                {"names": regions.names, "kinds": regions.kinds, "ng_per_unit": float(regions.ng_per_unit).hex()},
            )
    if regions is not None:
        notes.append(
            f"GTM region estimator with exact spread through the live operator ({rows.selection.num_rows} rows, "
            f"budget {rows.max_rows}), scanner background fitted as two columns; detection limits include the "
            f"spill-over of a {SPILL_SHIFT_VOXELS:g}-voxel model shift"
        )
    return Prepared(
        selection=rows.selection,
        row_weights=rows.weights,
        reference=np.zeros(rows.selection.num_rows, np.complex128) if rows.reference is None else rows.reference,
        has_reference=rows.reference is not None,
        size=rows.size,
        calibration_averages=rows.cal_averages,
        calibration_background_frames=0 if rows.bg_rows is None else int(rows.bg_rows.shape[-1]),
        operator_key=rows.operator_key,
        operator=op,
        regions=regions,
        notes=notes,
    )


#: How far each region's model is moved to bound the spill-over (voxels, each imaged axis, both ways).
SPILL_SHIFT_VOXELS = 0.5


def _shifted_signals(mat: np.ndarray, records: list[dict], grid: Grid) -> np.ndarray:
    """(S, R, 2M): each ROI's noise-free rows with every region's model moved by
    ``SPILL_SHIFT_VOXELS`` along each imaged axis (axes of one voxel are not moved), S shifts."""
    voxel = np.asarray(grid.fov_m, dtype=np.float64) / np.asarray(grid.size, dtype=np.float64)
    out = []
    for axis in (a for a in range(3) if grid.size[a] > 1):
        for sign in (-1.0, 1.0):
            moved = []
            for record in records:
                if "center_m" not in record:  # pragma: no cover - every live ROI shape has a centre
                    moved.append(record)
                    continue
                centre = [float(c) for c in record["center_m"]]
                centre[axis] += sign * SPILL_SHIFT_VOXELS * float(voxel[axis])
                moved.append({**record, "center_m": centre})
            chi = np.stack([r.signal for r in rois_for_quantification(moved, grid)])
            out.append((mat @ chi.T.astype(mat.dtype)).T)
    return np.asarray(out, dtype=np.float64)


def _spill_bound(shifted: np.ndarray | None, functionals: np.ndarray, regions: int) -> np.ndarray:
    """(R, R) ``spill[j, i]``: the largest |estimate of region i| per ng estimated in region j
    over the shifted models of region j (``_shifted_signals``); 0 on the diagonal."""
    spill = np.zeros((regions, regions))
    if shifted is None or shifted.size == 0:
        return spill
    for moved in shifted:  # (R, 2M): region j's moved model in row j
        est = moved @ functionals  # (R true, R estimated)
        own = np.abs(np.diag(est))
        with np.errstate(divide="ignore", invalid="ignore"):
            leak = np.where(own[:, None] > 0, np.abs(est) / own[:, None], 0.0)
        spill = np.maximum(spill, leak)
    np.fill_diagonal(spill, 0.0)
    return spill


def _load_regions(cache_dir, rkey: str, num_rows: int) -> PreparedRegions | None:
    entry = live_cache.load_entry(cache_dir, f"live-regions-{rkey}")
    if entry is None:
        return None
    arr, meta = entry
    try:
        names, kinds = [str(n) for n in meta["names"]], [str(k) for k in meta["kinds"]]
        f, sd, spill = arr["functionals"], arr["calibration_sd"], arr["spill"]
        r = len(names)
        if f.shape != (2 * num_rows, r) or sd.shape != (r,) or len(kinds) != r or spill.shape != (r, r):
            return None
        return PreparedRegions(names, kinds, f, sd, float.fromhex(meta["ng_per_unit"]), spill)
    except (KeyError, TypeError, ValueError):
        return None
