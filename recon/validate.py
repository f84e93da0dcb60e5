"""Checking that an uploaded file is a usable MDF file, without ever raising.

:func:`validate` is what the ingest worker runs on every upload: it turns any
file (empty, random bytes, truncated, a directory, a valid scan) into a
:class:`ValidationReport` with stable problem codes that the web side can
store and show. It reads metadata fully and scans the large datasets for
NaN/Inf in bounded blocks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import h5py
import numpy as np

from recon.mdf import MDFError, MDFFile, MDFLimitError, ReadLimits, open_h5
from recon.params import ReconParams

__all__ = ["Problem", "ValidationReport", "validate", "validate_pair"]

# Problem codes (stable: stored with rejected scans and shown to users).
NOT_FOUND = "not_found"
NOT_A_FILE = "not_a_file"
EMPTY = "empty_file"
NOT_HDF5 = "not_hdf5"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
UNSUPPORTED_VERSION = "unsupported_version"
MISSING_FIELD = "missing_field"
WRONG_DTYPE = "wrong_dtype"
INCONSISTENT = "inconsistent_dimensions"
INVALID_VALUE = "invalid_value"
NON_FINITE = "non_finite"
UNREADABLE = "unreadable_data"
INTERNAL = "internal_error"
# A readable file (or pair) that reconstruct refuses; same words as reconstruct (recon.inputs).
NOT_RECONSTRUCTABLE = "not_reconstructable"
# Raised by recon.mdf.check_declared_sizes before anything is read (MDFLimitError.code):
UNBACKED = "unbacked_data"
DECLARED_TOO_LARGE = "declared_too_large"
TOO_MANY_OBJECTS = "too_many_objects"
TOO_MANY_ATTRIBUTES = "too_many_attributes"
EXTERNAL_REFERENCE = "external_reference"

# NaN/Inf scans read at most this many bytes at a time.
_SCAN_BLOCK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Problem:
    """One reason a file is not usable.

    Attributes
    ----------
    code : str
        Stable short code, e.g. ``"missing_field"``.
    path : str
        The dataset concerned (``""`` for the file as a whole).
    message : str
        One specific sentence naming sizes and values.
    """

    code: str
    path: str
    message: str


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of :func:`validate`.

    Attributes
    ----------
    valid : bool
        True when there is no problem.
    kind : str or None
        ``"measurement"``, ``"calibration"``, ``"reconstruction"`` when known.
    version : str or None
        The file's ``/version`` when readable.
    problems : list of Problem
    """

    valid: bool
    kind: str | None
    version: str | None
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``{"valid", "kind", "version", "problems": [{code, path, message}]}``."""
        return asdict(self)


class _Checker:
    """Collects problems for one open file; each check adds, none raises."""

    def __init__(self, h5: h5py.File):
        self.h5 = h5
        self.problems: list[Problem] = []

    def add(self, code: str, path: str, message: str) -> None:
        self.problems.append(Problem(code, path, message))

    def ds(self, path: str) -> h5py.Dataset | None:
        obj = self.h5.get(path)
        return obj if isinstance(obj, h5py.Dataset) else None

    def require(self, *paths: str) -> h5py.Dataset | None:
        """The first existing dataset of ``paths`` (alternative names), else a missing_field problem."""
        for p in paths:
            d = self.ds(p)
            if d is not None:
                return d
        self.add(
            MISSING_FIELD,
            paths[0],
            f"required field {paths[0]} is missing" + (f" (nor {', '.join(paths[1:])})" if paths[1:] else ""),
        )
        return None

    def number(
        self, *paths: str, required: bool = True, integer: bool = False, positive: bool = False
    ) -> float | int | None:
        d = self.require(*paths) if required else next((self.ds(p) for p in paths if self.ds(p) is not None), None)
        if d is None:
            return None
        if d.dtype.kind not in ("iu" if integer else "iuf") and not (integer and d.dtype.kind == "f"):
            self.add(
                WRONG_DTYPE, d.name, f"{d.name} has dtype {d.dtype}, expected {'an integer' if integer else 'a number'}"
            )
            return None
        try:
            arr = np.asarray(d[()]).ravel()
        except OSError as exc:
            self.add(UNREADABLE, d.name, f"cannot read {d.name}: {' '.join(str(exc).split())}")
            return None
        if arr.size == 0:
            self.add(INVALID_VALUE, d.name, f"{d.name} is empty")
            return None
        value = arr[0]
        if not np.isfinite(value):
            self.add(NON_FINITE, d.name, f"{d.name} is {value}")
            return None
        if integer and float(value) != int(value):
            self.add(WRONG_DTYPE, d.name, f"{d.name} is {value}, expected a whole number")
            return None
        if positive and value <= 0:
            self.add(INVALID_VALUE, d.name, f"{d.name} is {value}, expected a positive value")
            return None
        return int(value) if integer else float(value)

    def count(self, *paths: str) -> int | None:
        """A required positive whole number (a size), or None after adding the problem."""
        value = self.number(*paths, integer=True, positive=True)
        return None if value is None else int(value)

    def array(self, path: str, kinds: str = "iuf") -> np.ndarray | None:
        d = self.ds(path)
        if d is None:
            return None
        if d.dtype.kind not in kinds:
            self.add(WRONG_DTYPE, path, f"{path} has dtype {d.dtype}, expected numbers")
            return None
        try:
            return np.asarray(d[()])
        except OSError as exc:
            self.add(UNREADABLE, path, f"cannot read {path}: {' '.join(str(exc).split())}")
            return None

    def shape_is(self, path: str, expected: tuple, names: str) -> None:
        d = self.ds(path)
        if d is not None and tuple(d.shape) != tuple(expected):
            self.add(INCONSISTENT, path, f"{path} has shape {tuple(d.shape)}, expected {tuple(expected)} ({names})")

    def scan_finite(self, path: str) -> None:
        """Count NaN and Inf in a numeric dataset, reading bounded blocks along its first axis."""
        d = self.ds(path)
        if d is None or d.dtype.kind not in "fc" or d.size == 0:
            return
        n_nan = n_inf = 0
        first = None
        row_bytes = max(1, d.dtype.itemsize * int(np.prod(d.shape[1:], dtype=np.int64)))
        step = max(1, _SCAN_BLOCK_BYTES // row_bytes) if d.ndim else 1
        try:
            if d.ndim == 0:
                blocks: Iterable[tuple[int, np.ndarray]] = [(0, np.asarray(d[()]).reshape(1))]
            else:
                blocks = ((s, d[s : s + step]) for s in range(0, d.shape[0], step))
            for start, block in blocks:
                if block.dtype.kind == "c":
                    block = block.view(block.real.dtype)  # scan real and imaginary parts alike
                nan = np.isnan(block)
                inf = np.isinf(block)
                c_nan, c_inf = int(nan.sum()), int(inf.sum())
                if (c_nan or c_inf) and first is None:
                    where = np.argwhere(nan | inf)[0]
                    if d.dtype.kind == "c":
                        where[-1] //= 2
                    where[0] += start
                    first = tuple(int(w) for w in where) if d.ndim else ()
                n_nan += c_nan
                n_inf += c_inf
        except OSError as exc:
            self.add(UNREADABLE, path, f"cannot read {path}: {' '.join(str(exc).split())}")
            return
        if n_nan or n_inf:
            self.add(
                NON_FINITE,
                path,
                f"{path} holds {n_nan} NaN and {n_inf} Inf values (first at index {first}) in shape {d.shape}",
            )


def _check_general(c: _Checker) -> str | None:
    version = None
    d = c.require("/version")
    if d is not None:
        if d.dtype.kind not in "SOU":
            c.add(WRONG_DTYPE, "/version", f"/version has dtype {d.dtype}, expected a string like '2.1.0'")
        else:
            raw = d[()]
            version = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip()
            if not version.startswith("2"):
                c.add(
                    UNSUPPORTED_VERSION,
                    "/version",
                    f"MDF version {version!r} is not supported (this platform reads 2.x)",
                )
    for p in ("/uuid", "/study/name", "/experiment/name", "/scanner/name"):
        c.require(p)
    return version


def _kind(h5: h5py.File) -> str | None:
    has_meas = isinstance(h5.get("/measurement/data"), h5py.Dataset)
    if has_meas:
        cal = h5.get("/calibration")
        return "calibration" if isinstance(cal, h5py.Group) and len(cal) > 0 else "measurement"
    if "/reconstruction/data" in h5:
        return "reconstruction"
    return None


@dataclass
class _Dims:
    """The header's sizes and the stored data's, as far as they could be read (None: unknown)."""

    N: int | None = None
    J: int | None = None
    C: int | None = None
    V: int | None = None
    D: int | None = None
    flags: dict[str, int] = field(default_factory=dict)
    # from /measurement/data, in the layout the flags give
    dn: int | None = None
    dj: int | None = None
    dc: int | None = None
    dx: int | None = None
    names: str = ""
    n_bg: int = 0
    n_stored_freq: int | None = None

    @property
    def K(self) -> int | None:
        return self.V // 2 + 1 if self.V else None

    def flag(self, name: str) -> bool:
        return bool(self.flags.get(name, 0))


def _check_header_sizes(c: _Checker) -> _Dims:
    d = _Dims()
    d.N = c.count("/acquisition/numFrames", "/measurement/numFrames")
    d.J = c.count("/acquisition/numPeriodsPerFrame", "/acquisition/numPeriods")
    d.C = c.count("/acquisition/receiver/numChannels")
    d.V = c.count("/acquisition/receiver/numSamplingPoints")
    c.number("/acquisition/receiver/bandwidth", positive=True)
    c.number("/acquisition/drivefield/baseFrequency", positive=True)
    d.D = c.count("/acquisition/drivefield/numChannels")
    return d


def _check_drive_field(c: _Checker, d: _Dims) -> None:
    div = c.require("/acquisition/drivefield/divider")
    if div is None:
        return
    if div.dtype.kind not in "iuf":
        c.add(WRONG_DTYPE, div.name, f"{div.name} has dtype {div.dtype}, expected integers")
    elif d.D is not None and (div.ndim != 2 or div.shape[0] != d.D):
        c.add(INCONSISTENT, div.name, f"{div.name} has shape {div.shape}, expected ({d.D}, F) for {d.D} drive channels")
    strength = c.ds("/acquisition/drivefield/strength")
    if strength is not None and div.ndim == 2 and d.J is not None:
        c.shape_is(strength.name, (d.J,) + tuple(div.shape), "J x D x F")


def _read_flag(c: _Checker, *aliases: str, required: bool) -> int:
    ds = c.require(*aliases) if required else c.ds(aliases[0])
    if ds is None:
        return 0
    if ds.dtype.kind not in "iub":
        c.add(WRONG_DTYPE, ds.name, f"{ds.name} has dtype {ds.dtype}, expected an Int8 flag")
        return 0
    return int(np.asarray(ds[()]).ravel()[0])


def _check_flags(c: _Checker, d: _Dims) -> None:
    d.flags["isFourierTransformed"] = _read_flag(c, "/measurement/isFourierTransformed", required=True)
    d.flags["isFastFrameAxis"] = _read_flag(
        c, "/measurement/isFastFrameAxis", "/measurement/isTransposed", required=True
    )
    for name in (
        "isFrequencySelection",
        "isFramePermutation",
        "isSparsityTransformed",
        "isBackgroundCorrected",
        "isTransferFunctionCorrected",
    ):
        d.flags[name] = _read_flag(c, f"/measurement/{name}", required=False)


def _check_data_shape(c: _Checker, d: _Dims) -> h5py.Dataset | None:
    """The data's dtype and rank; fills d.dn, d.dj, d.dc, d.dx. None when the rest cannot be checked."""
    data = c.require("/measurement/data")
    if data is None:
        return None
    if data.dtype.kind not in "iufc":
        c.add(WRONG_DTYPE, data.name, f"{data.name} has dtype {data.dtype}, expected integer, float or complex numbers")
        return None
    ft, fast = d.flag("isFourierTransformed"), d.flag("isFastFrameAxis")
    shape = tuple(data.shape)
    if ft and data.dtype.kind != "c" and len(shape) == 5 and shape[-1] == 2:
        shape = shape[:-1]  # legacy real/imaginary pairs
    if len(shape) != 4:
        c.add(
            INCONSISTENT,
            data.name,
            f"{data.name} has {len(shape)} dimensions {data.shape}, expected 4 "
            f"({'J x C x K x N' if fast else 'N x J x C x ' + ('K' if ft else 'V')})",
        )
        return None
    if fast:
        d.dj, d.dc, d.dx, d.dn = shape
        d.names = "J x C x K x N"
    else:
        d.dn, d.dj, d.dc, d.dx = shape
        d.names = "N x J x C x " + ("K" if ft else "V")
    if ft and data.dtype.kind in "iu":
        c.add(WRONG_DTYPE, data.name, f"{data.name} is Fourier transformed but has integer dtype {data.dtype}")
    return data


def _check_data_matches_header(c: _Checker, d: _Dims, data: h5py.Dataset) -> None:
    for stored, header, what, name in (
        (d.dn, d.N, "frames", "numFrames"),
        (d.dj, d.J, "periods", "numPeriodsPerFrame"),
        (d.dc, d.C, "receive channels", "receiver/numChannels"),
    ):
        if header is not None and stored != header:
            c.add(
                INCONSISTENT,
                data.name,
                f"{data.name} has {stored} {what} in shape {data.shape} ({d.names}) but {name} is {header}",
            )


def _check_frequency_selection(c: _Checker, d: _Dims) -> None:
    if not d.flag("isFrequencySelection"):
        return
    sel = c.require("/measurement/frequencySelection")
    if sel is None:
        return
    if sel.dtype.kind not in "iu":
        c.add(WRONG_DTYPE, sel.name, f"{sel.name} has dtype {sel.dtype}, expected integers")
        return
    vals = np.asarray(sel[()]).ravel()
    d.n_stored_freq = vals.size
    K = d.K
    if K is not None and vals.size and (vals.min() < 0 or vals.max() > K or (vals.min() == 0 and vals.max() == K)):
        c.add(
            INVALID_VALUE,
            sel.name,
            f"{sel.name} holds values {vals.min()}..{vals.max()}, outside the {K} frequencies (0-based or 1-based)",
        )


def _check_samples_or_frequencies(c: _Checker, d: _Dims, data: h5py.Dataset) -> None:
    if d.flag("isFourierTransformed"):
        expected = d.n_stored_freq if d.n_stored_freq is not None else d.K
        if expected is not None and d.dx != expected:
            why = "the frequencySelection length" if d.n_stored_freq is not None else f"K = V/2+1 for V = {d.V}"
            c.add(
                INCONSISTENT,
                data.name,
                f"{data.name} stores {d.dx} frequencies in shape {data.shape} but {why} is {expected}",
            )
    elif d.V is not None and d.dx != d.V:
        c.add(
            INCONSISTENT,
            data.name,
            f"{data.name} stores {d.dx} samples per period in shape {data.shape} but numSamplingPoints is {d.V}",
        )


def _check_background_mask(c: _Checker, d: _Dims) -> None:
    bg = c.array("/measurement/isBackgroundFrame", "iub")
    if bg is None:
        return
    bg = bg.ravel()
    d.n_bg = int(np.count_nonzero(bg))
    if bg.size != d.dn:
        c.add(
            INCONSISTENT,
            "/measurement/isBackgroundFrame",
            f"/measurement/isBackgroundFrame has {bg.size} entries for {d.dn} frames",
        )


def _check_frame_permutation(c: _Checker, d: _Dims) -> None:
    if not d.flag("isFramePermutation"):
        return
    perm = c.ds("/measurement/framePermutation")
    if perm is None:
        c.add(
            MISSING_FIELD,
            "/measurement/framePermutation",
            "isFramePermutation is set but /measurement/framePermutation is missing",
        )
        return
    perm_vals = c.array(perm.name, "iu")
    if perm_vals is None:
        return
    vals = np.sort(perm_vals.ravel())
    dn = d.dn or 0
    if not (vals.size == dn and (np.array_equal(vals, np.arange(dn)) or np.array_equal(vals, np.arange(1, dn + 1)))):
        c.add(INVALID_VALUE, perm.name, f"{perm.name} ({vals.size} values) is not a permutation of the {dn} frames")


def _check_receiver_arrays(c: _Checker, d: _Dims) -> None:
    tf = c.ds("/acquisition/receiver/transferFunction")
    if tf is not None and d.C is not None and d.K is not None:
        ks = {d.K} | ({d.n_stored_freq} if d.n_stored_freq is not None else set())
        ok = tf.shape[:2] in {(d.C, k) for k in ks} and (
            tf.ndim == 2 if tf.dtype.kind == "c" else (tf.ndim == 3 and tf.shape[2] == 2)
        )
        if not ok:
            expected = " or ".join(f"({d.C}, {k})" for k in sorted(ks))
            c.add(
                INCONSISTENT,
                tf.name,
                f"{tf.name} has shape {tf.shape}, expected {expected} (C x K, all or the selected frequencies)",
            )
    conv = c.ds("/acquisition/receiver/dataConversionFactor")
    if conv is not None and d.C is not None:
        c.shape_is(conv.name, (d.C, 2), "C x 2: scale and offset per receive channel")


def _check_calibration_grid(c: _Checker, d: _Dims, data: h5py.Dataset) -> None:
    size = c.array("/calibration/size", "iu") if c.require("/calibration/size") is not None else None
    for p in ("/calibration/fieldOfView", "/calibration/fieldOfViewCenter"):
        if c.require(p) is not None:
            c.shape_is(p, (3,), "x, y, z")
    if size is None:
        return
    size = size.ravel()
    if size.size != 3 or np.any(size <= 0):
        c.add(INVALID_VALUE, "/calibration/size", f"/calibration/size is {size.tolist()}, expected 3 positive integers")
        return
    n_grid = int(np.prod(size))
    dn = d.dn or 0
    if d.flag("isSparsityTransformed"):
        sub = c.require("/measurement/subsamplingIndices")
        if sub is not None:
            n_coef = dn - d.n_bg
            c.shape_is(sub.name, (d.dj, d.dc, d.dx, n_coef), "J x C x K x B with B = frames - background frames")
            if n_coef > n_grid:
                c.add(INCONSISTENT, sub.name, f"{n_coef} compressed coefficients exceed the {n_grid} grid positions")
    elif n_grid + d.n_bg != dn:
        c.add(
            INCONSISTENT,
            data.name,
            f"{data.name} has {dn} frames but the calibration grid {size.tolist()} has {n_grid} positions "
            f"plus {d.n_bg} background frames = {n_grid + d.n_bg}",
        )


def _check_calibration_snr(c: _Checker, d: _Dims) -> None:
    snr = c.ds("/calibration/snr")
    if snr is None or d.J is None or d.C is None:
        return
    ok_k = {k for k in (d.K, d.n_stored_freq, d.dx if d.flag("isFourierTransformed") else None) if k is not None}
    if snr.ndim != 3 or snr.shape[0] != d.J or snr.shape[1] != d.C or snr.shape[2] not in ok_k:
        c.add(INCONSISTENT, snr.name, f"{snr.name} has shape {snr.shape}, expected ({d.J}, {d.C}, {d.K}) (J x C x K)")
    c.scan_finite(snr.name)


def _check_acquisition_and_data(c: _Checker, kind: str) -> None:
    """One named check per rule; later checks use what earlier ones could read."""
    d = _check_header_sizes(c)
    _check_drive_field(c, d)
    _check_flags(c, d)
    data = _check_data_shape(c, d)
    if data is None:
        return
    _check_data_matches_header(c, d, data)
    _check_frequency_selection(c, d)
    _check_samples_or_frequencies(c, d, data)
    _check_background_mask(c, d)
    _check_frame_permutation(c, d)
    _check_receiver_arrays(c, d)
    if kind == "calibration":
        _check_calibration_grid(c, d, data)
        _check_calibration_snr(c, d)
    c.scan_finite(data.name)


def _check_reconstruction(c: _Checker) -> None:
    data = c.require("/reconstruction/data")
    size = c.array("/reconstruction/size", "iu") if c.require("/reconstruction/size") is not None else None
    for p in ("/reconstruction/fieldOfView", "/reconstruction/fieldOfViewCenter"):
        if c.require(p) is not None:
            c.shape_is(p, (3,), "x, y, z")
    if data is None:
        return
    if data.dtype.kind not in "iuf":
        c.add(WRONG_DTYPE, data.name, f"{data.name} has dtype {data.dtype}, expected real numbers")
        return
    if data.ndim != 3:
        c.add(INCONSISTENT, data.name, f"{data.name} has shape {data.shape}, expected Q x P x S")
        return
    P = data.shape[1]
    if size is not None:
        size = size.ravel()
        if size.size != 3 or int(np.prod(size)) != P:
            c.add(
                INCONSISTENT,
                data.name,
                f"{data.name} has {P} voxels but /reconstruction/size {size.tolist()} "
                f"holds {int(np.prod(size)) if size.size else 0}",
            )
    c.shape_is("/reconstruction/positions", (P, 3), "P x 3")
    c.shape_is("/reconstruction/isOverscanRegion", (P,), "P")
    c.scan_finite(data.name)


def validate(path: str | os.PathLike, *, limits: ReadLimits | None = None) -> ValidationReport:
    """Check an MDF file and report every problem found; never raises.

    Parameters
    ----------
    path : str or os.PathLike
        Any path: missing paths, directories, empty and non-HDF5 files give a
        report with the corresponding problem.
    limits : ReadLimits, optional
        Declared sizes, compression ratio, objects and attributes are checked
        against these (defaults when None) before any dataset is read; a file
        over them gets one problem and nothing of it is read.

    Returns
    -------
    ValidationReport
        ``valid`` is True when ``problems`` is empty. Codes: ``not_found``,
        ``not_a_file``, ``empty_file``, ``not_hdf5``, ``truncated``,
        ``corrupt``, ``unsupported_version``, ``missing_field``,
        ``wrong_dtype``, ``inconsistent_dimensions``, ``invalid_value``,
        ``non_finite``, ``unreadable_data``, ``internal_error``,
        ``not_reconstructable`` (a calibration that reconstruct refuses: no
        positive ``/tracer/concentration``, an SNR that fits no frequency axis,
        an ``order`` other than xyz), and from the
        size checks ``unbacked_data``, ``declared_too_large``,
        ``too_many_objects``, ``too_many_attributes``, ``external_reference``.

    Notes
    -----
    Large datasets are scanned for NaN/Inf in blocks of at most 32 MiB.
    """
    try:
        return _validate(os.fspath(path), limits or ReadLimits())
    except Exception as exc:  # noqa: BLE001 - a validator that raises would take the ingest worker down with it
        return ValidationReport(
            False, None, None, [Problem(INTERNAL, "", f"validator failed: {type(exc).__name__}: {exc}")]
        )


def _validate(path: str, limits: ReadLimits) -> ValidationReport:
    def fail(code: str, message: str, where: str = "") -> ValidationReport:
        return ValidationReport(False, None, None, [Problem(code, where, message)])

    if not os.path.exists(path):
        return fail(NOT_FOUND, f"{path}: no such file")
    if os.path.isdir(path):
        return fail(NOT_A_FILE, f"{path}: is a directory, not an MDF file")
    try:
        h5 = open_h5(path, limits)
    except MDFLimitError as exc:
        return fail(exc.code, str(exc), exc.dataset)
    except MDFError as exc:
        msg = str(exc)
        if "empty file" in msg:
            return fail(EMPTY, msg)
        if "not an HDF5 file" in msg:
            return fail(NOT_HDF5, msg)
        if "truncated" in msg:
            return fail(TRUNCATED, msg)
        if "no such file" in msg:
            return fail(NOT_FOUND, msg)
        return fail(CORRUPT, msg)
    with h5:
        c = _Checker(h5)
        version = _check_general(c)
        kind = _kind(h5)
        if kind is None:
            c.add(MISSING_FIELD, "/measurement/data", "neither /measurement/data nor /reconstruction/data is present")
        elif kind == "reconstruction":
            _check_reconstruction(c)
        else:
            _check_acquisition_and_data(c, kind)
        if not c.problems and kind is not None and kind != "reconstruction":
            # Last line of defence: the reader itself must accept the file.
            try:
                with MDFFile(path, limits=limits) as f:
                    if kind == "calibration":
                        _check_usable_calibration(c, f)
            except MDFError as exc:
                c.add(INCONSISTENT, "", str(exc))
        return ValidationReport(not c.problems, kind, version, list(c.problems))


def _check_usable_calibration(c: _Checker, f: MDFFile) -> None:
    """What reconstruct refuses in a calibration alone (recon.inputs.check_calibration), as a problem."""
    from recon.inputs import InputError, check_calibration

    try:
        check_calibration(f)
    except InputError as exc:
        c.add(NOT_RECONSTRUCTABLE, exc.dataset, str(exc))


def validate_pair(
    calibration_path: str | os.PathLike,
    measurement_path: str | os.PathLike,
    *,
    params: ReconParams | None = None,
    limits: ReadLimits | None = None,
) -> ValidationReport:
    """Check a calibration and a scan together: every refusal of ``reconstruct`` before it reads data.

    Each file is first checked alone (:func:`validate`, its problems reported
    with the file's path in the message); then the pair is checked by
    :func:`recon.inputs.check_pair`, the very function
    :func:`recon.pipeline.reconstruct_file` calls, so a refusal reads the same
    words in both places (code ``not_reconstructable``). Never raises.

    Returns
    -------
    ValidationReport
        ``kind`` is ``"pair"``; ``version`` the calibration's.
    """
    try:
        return _validate_pair(os.fspath(calibration_path), os.fspath(measurement_path), params, limits)
    except Exception as exc:  # noqa: BLE001 - same contract as validate(): a report, never an exception
        return ValidationReport(
            False, "pair", None, [Problem(INTERNAL, "", f"validator failed: {type(exc).__name__}: {exc}")]
        )


def _validate_pair(cal: str, meas: str, params: ReconParams | None, limits: ReadLimits | None) -> ValidationReport:
    from recon.inputs import InputError, check_pair

    problems: list[Problem] = []
    version = None
    for path in (cal, meas):
        report = validate(path, limits=limits)
        version = version or report.version
        problems += [
            Problem(p.code, p.path, p.message if path in p.message else f"{path}: {p.message}") for p in report.problems
        ]
    try:
        with MDFFile(cal, limits=limits) as smf, MDFFile(meas, limits=limits) as mf:
            check_pair(smf, mf, params)
    except InputError as exc:
        if not any(p.message == str(exc) for p in problems):
            problems.append(Problem(NOT_RECONSTRUCTABLE, exc.dataset, str(exc)))
    except MDFError as exc:
        if not problems:  # otherwise the per-file problems already say why the file cannot be opened
            problems.append(Problem(INCONSISTENT, "", str(exc)))
    return ValidationReport(not problems, "pair", version, problems)
