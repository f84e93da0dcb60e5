"""Reading and writing MPI Data Format (MDF v2) files.

MDF is HDF5 with a fixed set of datasets (see ``shared/design/MDF.md`` and the
specification in MagneticParticleImaging/MDF). This module is the only place in
``recon`` that knows about HDF5: the numerical modules take and return arrays.

Reading is lazy: opening a file reads a handful of scalars; :meth:`MDFFile.spectra`
and :meth:`MDFFile.system_matrix` read only the hyperslabs that were asked for,
in bounded blocks, so a system matrix larger than memory can be used row-wise.

Conventions used throughout (the MDF letters):

N frames (O foreground + E background), J periods per frame, C receive
channels, D drive channels, F drive frequencies, V samples per period,
K = V // 2 + 1 frequencies, B compressed coefficients, Q reconstructed frames,
P voxels, S multispectral channels.
"""

from __future__ import annotations

import json
import math
import os
import uuid as _uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import h5py
import numpy as np
import scipy.fft

__all__ = [
    "MDFError",
    "MDFFile",
    "MDFLimitError",
    "ReadLimits",
    "check_declared_sizes",
    "GENERAL_DEFAULTS",
    "open_h5",
    "to_storable",
    "voxel_positions",
    "write_mdf",
    "write_reconstruction",
]

# Reads are split into blocks of at most this many bytes of stored data so the
# peak memory of a read is the output plus one block, whatever the file size.
_BLOCK_BYTES = 64 * 2**20

# Datasets larger than this are written chunked (and optionally compressed).
_CHUNK_THRESHOLD_BYTES = 1 * 2**20
# Target size of one chunk of a fast-frame-axis system matrix: a few rows.
_CHUNK_TARGET_BYTES = 1 * 2**20

_LAYOUT_FLAGS = (
    "isFastFrameAxis",
    "isFourierTransformed",
    "isFrequencySelection",
    "isSparsityTransformed",
    "isBackgroundCorrected",
    "isFramePermutation",
    "isTransferFunctionCorrected",
)

_DCT_TYPES = {"DCT-I": 1, "DCT-II": 2, "DCT-III": 3, "DCT-IV": 4}

_MISSING = object()


class MDFError(Exception):
    """A file is not a readable MDF file, or a request does not fit the file.

    The message is one line, specific and meant for a person: it names the
    file path or dataset and the offending sizes or values.
    """


class MDFLimitError(MDFError):
    """A file declares more than it stores, more than the reader's limits, or data in other files.

    Attributes
    ----------
    code : str
        ``"unbacked_data"``, ``"declared_too_large"``, ``"too_many_objects"``,
        ``"too_many_attributes"`` or ``"external_reference"``.
    dataset : str
        The dataset or link concerned (``""`` for the file as a whole).
    """

    def __init__(self, code: str, dataset: str, message: str):
        super().__init__(message)
        self.code = code
        self.dataset = dataset


@dataclass(frozen=True)
class ReadLimits:
    """Bounds checked on every file before any dataset is read.

    HDF5 lets a file of a few KB declare a dataset of 10**12 values with nothing
    stored: every read of it returns the fill value, costing memory and time in
    proportion to what was declared, not to the file. These limits make that cost
    proportional to the file again.

    Attributes
    ----------
    max_declared_bytes : int
        Largest sum over all datasets of shape x itemsize (uncompressed bytes).
    max_compression_ratio : float
        Largest declared / stored bytes of a filtered (compressed) dataset.
    max_objects : int
        Most links (groups, datasets) walked.
    max_attributes : int
        Most attributes, summed over all objects.
    """

    max_declared_bytes: int = 32 * 2**30
    max_compression_ratio: float = 1000.0
    max_objects: int = 10_000
    max_attributes: int = 10_000


def _declared_bytes(ds: h5py.Dataset) -> int:
    """Elements x the size of one element in the file (16 bytes for a variable-length
    string, whose characters live in the file's heap). Python integers: no overflow."""
    if ds.shape is None:  # null dataspace
        return 0
    return math.prod(int(n) for n in ds.shape) * ds.id.get_type().get_size()


def _check_dataset(name: str, ds: h5py.Dataset, file_size: int, limits: ReadLimits) -> int:
    """Declared bytes of ``ds`` after checking that the file really stores them (raises MDFLimitError)."""
    declared = _declared_bytes(ds)
    dcpl = ds.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.VIRTUAL or dcpl.get_external_count() > 0:
        raise MDFLimitError(
            "external_reference",
            name,
            f"{name} keeps its data in other files "
            f"({'a virtual dataset' if layout == h5py.h5d.VIRTUAL else 'external storage'}): refused",
        )
    if declared == 0 or layout == h5py.h5d.COMPACT:  # compact data lives in the object header (< 64 KiB)
        return declared
    stored = ds.id.get_storage_size()
    if stored == 0:
        raise MDFLimitError(
            "unbacked_data",
            name,
            f"{name} declares {declared} bytes (shape {ds.shape}, {ds.dtype}) "
            "but stores none: every value would be the fill value",
        )
    if declared > limits.max_declared_bytes:
        raise MDFLimitError(
            "declared_too_large",
            name,
            f"{name} declares {declared} bytes (shape {ds.shape}, "
            f"{ds.dtype}), more than the limit of {limits.max_declared_bytes} bytes",
        )
    if stored > file_size:
        raise MDFLimitError("unbacked_data", name, f"{name} claims {stored} stored bytes in a file of {file_size}")
    if layout == h5py.h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        if stored < declared or offset is None or offset + stored > file_size:
            raise MDFLimitError(
                "unbacked_data",
                name,
                f"{name} declares {declared} bytes but stores {stored} at offset {offset} of a {file_size}-byte file",
            )
        return declared
    chunks = ds.chunks or ()
    expected = math.prod(
        -(-int(n) // int(c)) for n, c in zip(ds.shape, chunks, strict=False)
    )  # no chunks: contiguous or compact
    allocated = ds.id.get_num_chunks()
    if allocated < expected:
        raise MDFLimitError(
            "unbacked_data",
            name,
            f"{name} declares {declared} bytes (shape {ds.shape}) in "
            f"{expected} chunks but stores {allocated} of them: the rest would be the fill value",
        )
    if dcpl.get_nfilters() and declared > stored * limits.max_compression_ratio:
        raise MDFLimitError(
            "declared_too_large",
            name,
            f"{name} declares {declared} bytes compressed into {stored}: "
            f"a ratio above the limit of {limits.max_compression_ratio:g}",
        )
    return declared


def check_declared_sizes(h5: h5py.File, limits: ReadLimits | None = None) -> None:
    """Check every object of an open file against ``limits`` and what the file stores.

    Walks the links (never the data): at most ``limits.max_objects`` of them.
    Refuses links and datasets that reach into other files, datasets whose
    declared bytes the file does not store (unallocated or partly allocated
    storage: fill values only), compression ratios and total declared sizes
    above the limits, and too many objects or attributes.

    Raises
    ------
    MDFLimitError
        On the first object that fails, naming it and the sizes involved.
    """
    limits = limits or ReadLimits()
    file_size = h5.id.get_filesize()
    counts = {"objects": 0, "attributes": len(h5.attrs), "declared": 0}
    # An exception raised inside the visit callback reaches the caller as a
    # SystemError from h5py's lock wrapper, so failures are kept and raised after the walk.
    failure: list[Exception] = []

    def visit(name: str, link) -> bool | None:
        counts["objects"] += 1
        path = "/" + name
        try:
            if counts["objects"] > limits.max_objects:
                raise MDFLimitError("too_many_objects", "", f"the file holds more than {limits.max_objects} objects")
            if isinstance(link, h5py.ExternalLink):
                raise MDFLimitError(
                    "external_reference", path, f"{path} links to {link.filename}:{link.path} in another file: refused"
                )
            if not isinstance(link, h5py.HardLink):
                return None  # a soft link names an object of this file, checked where it is
            obj = h5[name]
            counts["attributes"] += len(obj.attrs)
            if counts["attributes"] > limits.max_attributes:
                raise MDFLimitError(
                    "too_many_attributes", path, f"the file holds more than {limits.max_attributes} attributes"
                )
            if isinstance(obj, h5py.Dataset):
                counts["declared"] += _check_dataset(path, obj, file_size, limits)
                if counts["declared"] > limits.max_declared_bytes:
                    raise MDFLimitError(
                        "declared_too_large",
                        path,
                        f"the datasets up to {path} declare "
                        f"{counts['declared']} bytes, more than the limit of "
                        f"{limits.max_declared_bytes} bytes",
                    )
        except (MDFLimitError, OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            failure.append(exc)  # a damaged object header raises KeyError/OSError here: open_h5 calls it corrupt
            return True  # stops the walk
        return None

    if counts["attributes"] > limits.max_attributes:
        raise MDFLimitError("too_many_attributes", "/", f"the file holds more than {limits.max_attributes} attributes")
    h5.visititems_links(visit)
    if failure:
        raise failure[0]


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #


def _decode(value: Any) -> Any:
    """Turn h5py values into plain Python: bytes -> str, size-1 arrays -> scalars."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SO":
            flat = [_decode(v) for v in value.ravel().tolist()]
            return flat[0] if value.ndim == 0 else np.array(flat, dtype=object).reshape(value.shape).tolist()
        if value.ndim == 0:
            return value.item()
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def open_h5(path: str | os.PathLike, limits: ReadLimits | None = None) -> h5py.File:
    """Open ``path`` read-only as HDF5, or raise :class:`MDFError` saying why not.

    Distinguishes a missing path, a directory, an empty file, a file that is
    not HDF5 at all, and an HDF5 file that is truncated or corrupt; then checks
    the declared sizes with :func:`check_declared_sizes` against ``limits``
    (:class:`ReadLimits` defaults when None), raising :class:`MDFLimitError`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MDFError(f"{path}: no such file")
    if os.path.isdir(path):
        raise MDFError(f"{path}: is a directory, not an MDF file")
    size = os.path.getsize(path)
    if size == 0:
        raise MDFError(f"{path}: empty file (0 bytes), not an MDF file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as exc:  # unreadable (permissions, I/O error)
        raise MDFError(f"{path}: cannot read: {exc}") from None
    if not is_hdf5:
        raise MDFError(f"{path}: not an HDF5 file (no HDF5 signature in its {size} bytes)")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        # The signature is there but the library cannot follow the file's
        # structure: nearly always an upload that stopped part way.
        detail = " ".join(str(exc).split())
        if "truncated" in detail:
            raise MDFError(f"{path}: truncated HDF5 file ({size} bytes on disk): {detail}") from None
        raise MDFError(f"{path}: corrupt HDF5 file ({size} bytes): {detail}") from None
    try:
        check_declared_sizes(h5, limits)
    except MDFLimitError:
        h5.close()
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        h5.close()
        raise MDFError(f"{path}: corrupt HDF5 file ({size} bytes): {' '.join(str(exc).split())}") from None
    return h5


def _as_indices(selection: Any, n: int, what: str) -> np.ndarray:
    """Normalise a selection (None, int, slice, sequence, bool mask) to int64 indices in [0, n)."""
    if selection is None:
        return np.arange(n, dtype=np.int64)
    if isinstance(selection, slice):
        return np.arange(n, dtype=np.int64)[selection]
    if isinstance(selection, (int, np.integer)):
        selection = [int(selection)]
    idx = np.asarray(selection)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise MDFError(f"{what} mask has shape {idx.shape}, expected ({n},)")
        return np.flatnonzero(idx).astype(np.int64)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if idx.dtype.kind not in "iu":
        raise MDFError(f"{what} indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64).ravel()
    idx = np.where(idx < 0, idx + n, idx)  # python-style negative indices
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise MDFError(f"{what} index {int(bad[0])} is out of range: the file has {n} {what}s")
    return idx


def _detect_base(indices: np.ndarray, n: int, what: str) -> np.ndarray:
    """Return 0-based indices from a stored index list that may be 1-based.

    The Julia reference implementation writes 1-based indices; Python writers
    tend to write 0-based ones. A 0 can only occur 0-based and an ``n`` only
    1-based; without either, 1-based is assumed because that is what the
    reference writes.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        return idx
    lo, hi = int(idx.min()), int(idx.max())
    zero_based = idx if lo == 0 else idx - 1
    if lo < 0 or int(zero_based.max()) >= n:
        raise MDFError(f"{what} holds values from {lo} to {hi}, outside 0..{n - 1} (0-based) and 1..{n} (1-based)")
    return zero_based


def _read_selected(ds: h5py.Dataset, selections: list[np.ndarray], trailing: int = 0) -> np.ndarray:
    """Read ``ds`` at the outer product of per-axis index arrays, in the requested order.

    HDF5 (and h5py) can only take one increasing list per read, so the axis
    whose selection saves most gets a sorted unique list and the others the
    bounding slice; the result is then reordered in memory. ``trailing`` axes
    after the selected ones are read whole (legacy real/imaginary pairs).
    """
    h5sel: list[Any] = []
    positions: list[np.ndarray] = []
    list_axis = -1
    best_ratio = 1.0
    uniques = []
    for ax, idx in enumerate(selections):
        u = np.unique(idx)
        uniques.append(u)
        if u.size == 0:
            continue
        span = int(u[-1] - u[0] + 1)
        ratio = u.size / span
        if ratio < best_ratio:
            best_ratio, list_axis = ratio, ax
    if any(idx.size == 0 for idx in selections):
        shape = tuple(len(s) for s in selections) + tuple(ds.shape[len(selections) :])
        return np.zeros(shape, dtype=ds.dtype)
    identity = True
    for ax, (idx, u) in enumerate(zip(selections, uniques, strict=True)):
        if ax == list_axis:
            h5sel.append(u)  # sorted, unique: what h5py accepts
            pos = np.searchsorted(u, idx)
        else:
            h5sel.append(slice(int(u[0]), int(u[-1]) + 1))
            pos = idx - u[0]
        positions.append(pos)
        read_len = u.size if ax == list_axis else int(u[-1] - u[0] + 1)
        if pos.size != read_len or not np.array_equal(pos, np.arange(read_len)):
            identity = False
    h5sel.extend([slice(None)] * trailing)
    block = ds[tuple(h5sel)]
    if identity:
        return block
    return block[np.ix_(*positions)]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------- #
# reader
# --------------------------------------------------------------------------- #


class MDFFile:
    """Lazy reader of one MDF v2 file (measurement, calibration or reconstruction).

    Use as a context manager::

        with MDFFile(path) as f:
            u = f.spectra(frames=slice(0, 100))          # (100, J, C, K) complex128
            S, bg = f.system_matrix(frequencies=rows)     # (C, K_sel, O), (C, K_sel, E)

    Parameters
    ----------
    path : str or os.PathLike
        The MDF file.
    limits : ReadLimits, optional
        Checked before anything is read (see :func:`check_declared_sizes`);
        the :class:`ReadLimits` defaults when None.

    Raises
    ------
    MDFLimitError
        If the file declares more than it stores or than ``limits`` allow.
    MDFError
        If the path is missing, a directory, empty, not HDF5, truncated, lacks
        ``/version`` or has an unsupported major version, or lacks the
        datasets needed to know its dimensions.

    Attributes
    ----------
    version : str
        The file's ``/version``, e.g. ``"2.0"`` or ``"2.1.0"``.
    kind : str
        ``"measurement"``, ``"calibration"`` or ``"reconstruction"``.
    num_frames : int
        N, all frames including background ones (0 for reconstructions).
    num_periods : int
        J, ``numPeriodsPerFrame`` (or the pre-2.0.1 ``numPeriods``).
    num_receive_channels : int
        C.
    num_sampling_points : int
        V, samples per drive-field period.
    num_frequencies : int
        K = V // 2 + 1.
    bandwidth_hz, base_frequency_hz : float
        Receive bandwidth and drive-field base frequency in Hz.
    dividers : ndarray of int64, shape (D,)
        First column of ``/acquisition/drivefield/divider`` (D x F).
    drive_strength_t : ndarray of float64, shape (J, D, F)
        Drive-field amplitudes in T.
    frequencies_hz : ndarray of float64, shape (K,)
        The full frequency axis, ``arange(K) * 2 * bandwidth / V``.
    available_frequencies : ndarray of int64
        Indices into the full K axis that the file stores, in stored order (all
        of them unless a frequency selection was applied; ``frequencySelection``
        is read 1-based as MPIFiles writes it, 0-based when it holds a 0).
    is_background_frame : ndarray of bool, shape (N,)
        Background mask in acquisition order (the order of :meth:`spectra`).
    frame_permutation : ndarray of int64, shape (N,), or None
        0-based acquisition index of each stored frame (``framePermutation``,
        MPIFiles' convention: see :meth:`_read_frame_order`); a calibration's
        stored foreground order is its grid order.
    layout : dict of str to bool
        The processing flags, under their v2.1 names.
    transfer_function : ndarray of complex128, shape (C, K), or None
        ``/acquisition/receiver/transferFunction`` on the full K axis (NaN at
        frequencies a file stores it for the selected frequencies only). Whether
        the data is already divided by it: ``layout["isTransferFunctionCorrected"]``.
    calibration_size : tuple of 3 int, or None
        Calibration grid (x, y, z); x varies fastest in the frame order.
    field_of_view_m, field_of_view_center_m : ndarray of float64, shape (3,), or None
    snr : ndarray of float64, shape (J, C, K_stored), or None
        ``/calibration/snr``.
    tracer_concentration_mol_per_l : float or None
        ``/tracer/concentration[0]``, mol of solute per litre.
    """

    def __init__(self, path: str | os.PathLike, *, limits: ReadLimits | None = None):
        self.path = os.fspath(path)
        self._h5 = open_h5(self.path, limits)
        try:
            self._read_header()
        except MDFError:
            self._h5.close()
            raise
        except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
            self._h5.close()
            raise MDFError(f"{self.path}: unreadable MDF header: {type(exc).__name__}: {exc}") from None

    # -- context manager ---------------------------------------------------- #

    def __enter__(self) -> MDFFile:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying HDF5 file (idempotent)."""
        if self._h5.id.valid:
            self._h5.close()

    def __repr__(self) -> str:
        return (
            f"<MDFFile {self.path!r} v{self.version} {self.kind}: N={self.num_frames} "
            f"J={self.num_periods} C={self.num_receive_channels} V={self.num_sampling_points}>"
        )

    # -- raw access --------------------------------------------------------- #

    def has(self, path: str) -> bool:
        """Whether the dataset or group ``path`` exists."""
        return path in self._h5

    def field(self, path: str, default: Any = _MISSING) -> Any:
        """Return the value of any dataset, strings decoded.

        Parameters
        ----------
        path : str
            Absolute dataset path, e.g. ``"/acquisition/receiver/bandwidth"``.
        default : optional
            Returned when the dataset is missing; without it a missing dataset
            raises :class:`MDFError`.

        Returns
        -------
        str, int, float, list of str or ndarray
            Scalars as Python scalars, byte strings as ``str``, arrays as numpy
            arrays (compound r/i read as complex).
        """
        obj = self._h5.get(path)
        if obj is None or not isinstance(obj, h5py.Dataset):
            if default is _MISSING:
                what = "is a group, not a dataset" if obj is not None else "is missing"
                raise MDFError(f"{self.path}: {path} {what}")
            return default
        try:
            return _decode(obj[()])
        except OSError as exc:
            raise MDFError(f"{self.path}: cannot read {path}: {' '.join(str(exc).split())}") from None

    def _num(self, *paths: str, default: Any = _MISSING, kind: type = float) -> Any:
        """First of ``paths`` that exists, as a Python number of type ``kind``."""
        for p in paths:
            if p in self._h5:
                value = self.field(p)
                arr = np.asarray(value)
                if arr.dtype.kind not in "iufb" or arr.size == 0:
                    raise MDFError(f"{self.path}: {p} should be a number, found {arr.dtype} {value!r:.60}")
                return kind(arr.ravel()[0])
        if default is _MISSING:
            raise MDFError(f"{self.path}: missing {' or '.join(paths)}")
        return default

    def _flag(self, *paths: str) -> bool:
        return bool(self._num(*paths, default=0, kind=int))

    # -- header ------------------------------------------------------------- #

    def _read_header(self) -> None:
        h5 = self._h5
        if "version" not in h5:
            raise MDFError(f"{self.path}: missing /version: not an MDF file")
        self.version = str(self.field("/version")).strip()
        if not self.version.startswith("2"):
            raise MDFError(f"{self.path}: MDF version {self.version!r} is not supported (only 2.x)")

        has_meas = "/measurement/data" in h5
        if has_meas and "/calibration" in h5 and len(h5["/calibration"]) > 0:
            self.kind = "calibration"
        elif has_meas:
            self.kind = "measurement"
        elif "/reconstruction/data" in h5:
            self.kind = "reconstruction"
        else:
            raise MDFError(f"{self.path}: neither /measurement/data nor /reconstruction/data: no data to read")

        acquisition_needed = self.kind != "reconstruction"
        d = _MISSING if acquisition_needed else 0
        self.num_frames = self._num("/acquisition/numFrames", "/measurement/numFrames", default=d, kind=int)
        self.num_periods = self._num("/acquisition/numPeriodsPerFrame", "/acquisition/numPeriods", default=1, kind=int)
        self.num_receive_channels = self._num("/acquisition/receiver/numChannels", default=d, kind=int)
        self.num_sampling_points = self._num("/acquisition/receiver/numSamplingPoints", default=d, kind=int)
        self.num_frequencies = self.num_sampling_points // 2 + 1 if self.num_sampling_points else 0
        self.bandwidth_hz = self._num("/acquisition/receiver/bandwidth", default=d if d is _MISSING else 0.0)
        self.base_frequency_hz = self._num("/acquisition/drivefield/baseFrequency", default=0.0)
        if self.num_sampling_points:
            self.frequencies_hz = np.arange(self.num_frequencies) * 2.0 * self.bandwidth_hz / self.num_sampling_points
        else:
            self.frequencies_hz = np.zeros(0)

        divider = np.asarray(self.field("/acquisition/drivefield/divider", np.zeros((0, 1), np.int64)))
        divider = divider.reshape(divider.shape[0] if divider.ndim else 1, -1) if divider.size else np.zeros((0, 1))
        self.dividers = divider[:, 0].astype(np.int64)
        strength = np.asarray(self.field("/acquisition/drivefield/strength", np.zeros((0, 0, 0))), dtype=float)
        while strength.ndim < 3:  # older files store D x F or D
            strength = strength[np.newaxis] if strength.ndim == 2 else strength[..., np.newaxis]
        self.drive_strength_t = strength

        self.layout = {
            "isFastFrameAxis": self._flag("/measurement/isFastFrameAxis", "/measurement/isTransposed"),
            "isFourierTransformed": self._flag("/measurement/isFourierTransformed"),
            "isFrequencySelection": self._flag("/measurement/isFrequencySelection"),
            "isSparsityTransformed": self._flag("/measurement/isSparsityTransformed"),
            "isBackgroundCorrected": self._flag("/measurement/isBackgroundCorrected"),
            "isFramePermutation": self._flag("/measurement/isFramePermutation"),
            "isTransferFunctionCorrected": self._flag("/measurement/isTransferFunctionCorrected"),
        }

        tf = self.field("/acquisition/receiver/transferFunction", None)
        if tf is not None:
            tf = np.asarray(tf)
            if tf.dtype.kind != "c" and tf.ndim >= 1 and tf.shape[-1] == 2:  # legacy C x K x 2
                tf = tf[..., 0] + 1j * tf[..., 1]
            tf = tf.astype(np.complex128)
        self.transfer_function = tf

        conv = self.field("/acquisition/receiver/dataConversionFactor", None)
        if conv is not None:
            conv = np.asarray(conv, dtype=float).reshape(-1, 2)
        self._conversion = conv

        if self.kind == "calibration":
            size = self.field("/calibration/size", None)
            self.calibration_size = tuple(int(s) for s in np.ravel(size)) if size is not None else None
            fov = self.field("/calibration/fieldOfView", None)
            self.field_of_view_m = None if fov is None else np.asarray(fov, dtype=float)
            ctr = self.field("/calibration/fieldOfViewCenter", None)
            self.field_of_view_center_m = None if ctr is None else np.asarray(ctr, dtype=float)
            snr = self.field("/calibration/snr", None)
            self.snr = None if snr is None else np.asarray(snr, dtype=float)
        else:
            self.calibration_size = None
            self.field_of_view_m = None
            self.field_of_view_center_m = None
            self.snr = None

        conc = self.field("/tracer/concentration", None)
        conc_arr = np.ravel(np.asarray(conc)) if conc is not None else np.zeros(0)
        self.tracer_concentration_mol_per_l = (
            float(conc_arr[0]) if conc_arr.size and conc_arr.dtype.kind in "iuf" else None
        )

        if self.kind == "reconstruction":
            self.is_background_frame = np.zeros(self.num_frames, dtype=bool)
            self.available_frequencies = np.zeros(0, dtype=np.int64)
            self._ds: h5py.Dataset | None = None
            self.data_shape = tuple(int(s) for s in self._h5["/reconstruction/data"].shape)
            self.data_dtype = str(self._h5["/reconstruction/data"].dtype)
            return
        self._read_data_layout()

    @property
    def _dataset(self) -> h5py.Dataset:
        if self._ds is None:
            raise MDFError(f"{self.path}: a {self.kind} file has no /measurement/data")
        return self._ds

    def _read_data_layout(self) -> None:
        """Work out how /measurement/data maps onto (N, J, C, K-or-V)."""
        ds = self._h5["/measurement/data"]
        if not isinstance(ds, h5py.Dataset):
            raise MDFError(f"{self.path}: /measurement/data is a group, not a dataset")
        if ds.dtype.kind not in "iufc":
            raise MDFError(f"{self.path}: /measurement/data has dtype {ds.dtype}, expected numbers")
        self._ds = ds
        self.data_shape = tuple(int(s) for s in ds.shape)
        self.data_dtype = str(ds.dtype)
        ft = self.layout["isFourierTransformed"]
        # Old writers stored complex data as a trailing axis of length 2.
        self._pairs = ft and ds.dtype.kind != "c" and ds.ndim == 5 and ds.shape[-1] == 2
        shape = ds.shape[:-1] if self._pairs else ds.shape
        if len(shape) != 4:
            raise MDFError(f"{self.path}: /measurement/data has {len(shape)} dimensions {ds.shape}, expected 4")
        if self.layout["isFastFrameAxis"]:
            j, c, x, n = shape
        else:
            n, j, c, x = shape
        self._stored = {"N": n, "J": j, "C": c, "X": x}
        if j != self.num_periods or c != self.num_receive_channels:
            raise MDFError(
                f"{self.path}: /measurement/data has {j} periods and {c} channels in shape {ds.shape}, "
                f"but the header says numPeriods={self.num_periods}, numChannels={self.num_receive_channels}"
            )
        if n != self.num_frames:
            raise MDFError(
                f"{self.path}: /measurement/data holds {n} frames in shape {ds.shape}, "
                f"but numFrames is {self.num_frames}"
            )

        self.available_frequencies = self._read_frequency_axis(x, ds.shape)
        # position of each full-axis frequency in the stored axis, -1 when absent
        self._freq_pos = np.full(self.num_frequencies, -1, dtype=np.int64)
        self._freq_pos[self.available_frequencies] = np.arange(self.available_frequencies.size)
        self._expand_transfer_function()

        self._read_frame_order(n)

        if self.layout["isSparsityTransformed"]:
            name = str(self.field("/measurement/sparsityTransformation", "DCT-II")).strip().upper()
            if name not in _DCT_TYPES:
                raise MDFError(
                    f"{self.path}: sparsityTransformation {name!r} is not supported "
                    f"(supported: {', '.join(_DCT_TYPES)})"
                )
            self._dct_type = _DCT_TYPES[name]
            if "/measurement/subsamplingIndices" not in self._h5:
                raise MDFError(
                    f"{self.path}: isSparsityTransformed is set but /measurement/subsamplingIndices is missing"
                )

    def _read_frequency_axis(self, x: int, shape: tuple) -> np.ndarray:
        """Indices into the full K axis of the ``x`` stored frequencies (all K for time-domain data).

        ``frequencySelection`` lists them in stored order, 1-based as MPIFiles
        writes them (a 0 marks a 0-based list, see :func:`_detect_base`), in any
        order; a frequency listed twice is refused.
        """
        K = self.num_frequencies
        if not self.layout["isFourierTransformed"]:
            if x != self.num_sampling_points:
                raise MDFError(
                    f"{self.path}: /measurement/data stores {x} samples per period in shape {shape}, "
                    f"but numSamplingPoints is {self.num_sampling_points}"
                )
            return np.arange(K, dtype=np.int64)
        available = np.arange(K, dtype=np.int64)
        if self.layout["isFrequencySelection"]:
            sel = np.ravel(np.asarray(self.field("/measurement/frequencySelection")))
            if sel.dtype.kind not in "iu":
                raise MDFError(f"{self.path}: /measurement/frequencySelection has dtype {sel.dtype}, expected integers")
            available = _detect_base(sel, K, "/measurement/frequencySelection")
            if np.unique(available).size != sel.size:
                raise MDFError(
                    f"{self.path}: /measurement/frequencySelection lists a frequency more than once "
                    f"({sel.size} entries, {np.unique(sel).size} distinct)"
                )
        if available.size != x:
            raise MDFError(
                f"{self.path}: /measurement/data stores {x} frequencies in shape {shape}, expected {available.size}"
            )
        return available

    def _read_frame_order(self, n: int) -> None:
        """Background mask and frame permutation, following MPIFiles and the MDF specification.

        ``isBackgroundFrame`` is in stored order. ``framePermutation`` is σ in
        one-line notation: stored frame i is acquisition frame σ(i) (1-based as
        MPIFiles writes it; 0-based accepted). :meth:`spectra` returns frames in
        acquisition order (time order, so background interpolation and frame
        averaging follow time); :meth:`system_matrix` returns the stored order,
        which for a calibration *is* the grid order: MPIFiles' ``systemMatrix``
        reads ``data[measFGFrameIdx(f), :]`` as stored, and its
        ``calibPostProcessing`` stores frames through ``fullFramePermutation``
        (foreground in grid order, x fastest, a meandering robot path undone;
        background last); the specification ("calibration" group) says the
        permutation is "usually done such that measurements are ordered with
        respect to their x position first".
        """
        bg = self.field("/measurement/isBackgroundFrame", None)
        bg = np.zeros(n, dtype=bool) if bg is None else np.ravel(np.asarray(bg)).astype(bool)
        if bg.size != n:
            raise MDFError(f"{self.path}: /measurement/isBackgroundFrame has {bg.size} entries for {n} frames")
        self._bg_stored = bg
        self.frame_permutation: np.ndarray | None = None
        self._stored_of_acq = np.arange(n, dtype=np.int64)
        if self.layout["isFramePermutation"] and not self.layout["isSparsityTransformed"]:
            perm = np.ravel(np.asarray(self.field("/measurement/framePermutation")))
            perm = _detect_base(perm, n, "/measurement/framePermutation")
            if perm.size != n or np.unique(perm).size != n:
                raise MDFError(f"{self.path}: /measurement/framePermutation is not a permutation of {n} frames")
            self.frame_permutation = perm
            self._stored_of_acq = np.argsort(perm)
        self.is_background_frame = bg[self._stored_of_acq]

    def _expand_transfer_function(self) -> None:
        """Put a transfer function stored for the selected frequencies only onto the full K axis.

        MPIFiles' ``saveasMDF`` with a frequency selection keeps
        ``rxTransferFunction`` only at the selected frequencies (C x K_sel); the
        specification says C x K. Both are read as (C, K), NaN where not stored.
        """
        tf = self.transfer_function
        if tf is None:
            return
        C, K, k_sel = self.num_receive_channels, self.num_frequencies, self.available_frequencies.size
        if tf.ndim == 2 and tf.shape == (C, K):
            return
        if tf.ndim == 2 and tf.shape == (C, k_sel):
            full = np.full((C, K), np.nan + 0j, dtype=np.complex128)
            full[:, self.available_frequencies] = tf
            self.transfer_function = full
            return
        raise MDFError(
            f"{self.path}: /acquisition/receiver/transferFunction has shape {tf.shape}, expected "
            f"({C}, {K}) (C x K)" + (f" or ({C}, {k_sel}) for the selected frequencies" if k_sel != K else "")
        )

    # -- data access -------------------------------------------------------- #

    def _read_canonical(
        self, frames_st: np.ndarray, periods: np.ndarray, channels: np.ndarray, xs: np.ndarray
    ) -> np.ndarray:
        """Read stored data at (frames, periods, channels, samples-or-frequencies) in that order."""
        if self.layout["isFastFrameAxis"]:
            block = _read_selected(self._ds, [periods, channels, xs, frames_st], trailing=int(self._pairs))
            block = np.moveaxis(block, 3, 0)
        else:
            block = _read_selected(self._ds, [frames_st, periods, channels, xs], trailing=int(self._pairs))
        if self._pairs:
            block = block[..., 0] + 1j * block[..., 1]
        return block

    def _convert_time(self, raw: np.ndarray, channels: np.ndarray, channel_axis: int) -> np.ndarray:
        """Apply ``value = a * raw + b`` per receive channel (time domain)."""
        out = raw.astype(np.float64)
        if self._conversion is not None:
            shape = [1] * out.ndim
            shape[channel_axis] = channels.size
            out *= self._conversion[channels, 0].reshape(shape)
            out += self._conversion[channels, 1].reshape(shape)
        return out

    def _convert_freq(
        self,
        spec: np.ndarray,
        channels: np.ndarray,
        channel_axis: int,
        freqs: np.ndarray,
        freq_axis: int,
        offset: bool = True,
    ) -> np.ndarray:
        """Apply the conversion factor to stored spectra: ``a * X``, plus ``b * V`` on the DC bin."""
        return self._convert_freq_inplace(spec.astype(np.complex128), channels, channel_axis, freqs, freq_axis, offset)

    def _convert_freq_inplace(
        self,
        out: np.ndarray,
        channels: np.ndarray,
        channel_axis: int,
        freqs: np.ndarray,
        freq_axis: int,
        offset: bool = True,
    ) -> np.ndarray:
        if self._conversion is not None:
            shape = [1] * out.ndim
            shape[channel_axis] = channels.size
            out *= self._conversion[channels, 0].reshape(shape)
            dc = np.flatnonzero(freqs == 0)
            if offset and dc.size:
                # the offset b of every sample adds b*V to the unnormalised DC bin
                sl: list[slice | np.ndarray] = [slice(None)] * out.ndim
                sl[freq_axis] = dc
                out[tuple(sl)] += (self._conversion[channels, 1] * self.num_sampling_points).reshape(
                    [channels.size if a == channel_axis else 1 for a in range(out.ndim)]
                )
        return out

    def _stored_freq_positions(self, freqs: np.ndarray) -> np.ndarray:
        pos = self._freq_pos[freqs]
        missing = freqs[pos < 0]
        if missing.size:
            k = int(missing[0])
            raise MDFError(
                f"{self.path}: frequency index {k} ({self.frequencies_hz[k]:.0f} Hz) is not stored: "
                f"the file's frequencySelection keeps {self.available_frequencies.size} "
                f"of {self.num_frequencies} frequencies"
            )
        return pos

    def _need_data(self, what: str) -> None:
        if self.kind == "reconstruction":
            raise MDFError(f"{self.path}: {what} needs measurement data; this file is a reconstruction")

    def spectra(
        self, frames: Any = None, frequencies: Any = None, channels: Any = None, periods: Any = None
    ) -> np.ndarray:
        """Measured spectra in the file's physical unit, whatever the stored layout.

        Parameters
        ----------
        frames : None, int, slice, sequence of int or bool mask, optional
            Frame indices in acquisition order (a stored framePermutation is
            undone). None selects all N frames, background ones included.
        frequencies : None, int, slice or sequence of int, optional
            Indices into the full K axis (see :attr:`frequencies_hz`). None
            selects :attr:`available_frequencies` (all K unless the file holds
            a frequency selection).
        channels, periods : None, int, slice or sequence of int, optional
            0-based receive channel and period indices.

        Returns
        -------
        ndarray of complex128, shape (N_sel, J_sel, C_sel, K_sel)
            ``dataConversionFactor`` applied (unit ``/acquisition/receiver/unit``,
            usually V). Time-domain data is returned as the unnormalised
            ``numpy.fft.rfft`` of the V samples of each period.

        Raises
        ------
        MDFError
            For reconstructions, compressed system matrices (use
            :meth:`system_matrix`), indices out of range, or frequencies that a
            frequency selection dropped.

        Notes
        -----
        Only the selected hyperslabs are read, in blocks of about 64 MiB of
        stored data, so memory stays near the size of the result.
        """
        self._need_data("spectra()")
        if self.layout["isSparsityTransformed"]:
            raise MDFError(
                f"{self.path}: compressed (sparsity-transformed) data has no frame spectra; use system_matrix()"
            )
        n = self._stored["N"]
        fr = _as_indices(frames, n, "frame")
        fr_st = self._stored_of_acq[fr]
        pe = _as_indices(periods, self.num_periods, "period")
        ch = _as_indices(channels, self.num_receive_channels, "channel")
        fq = (
            self.available_frequencies.copy()
            if frequencies is None
            else _as_indices(frequencies, self.num_frequencies, "frequency")
        )

        out = np.empty((fr.size, pe.size, ch.size, fq.size), dtype=np.complex128)
        if 0 in out.shape:
            return out
        ft = self.layout["isFourierTransformed"]
        xs = self._stored_freq_positions(fq) if ft else np.arange(self.num_sampling_points)
        itemsize = self._dataset.dtype.itemsize * (2 if self._pairs else 1)
        if ft and self.layout["isFastFrameAxis"]:
            # J x C x K x N is chunked by whole rows: walk the frequencies, not the
            # frames, or every frame block would decompress every chunk again.
            per_freq = fr.size * pe.size * ch.size * itemsize
            step = max(1, _BLOCK_BYTES // max(per_freq, 1))
            for start in range(0, fq.size, step):
                stop = min(fq.size, start + step)
                block = self._read_canonical(fr_st, pe, ch, xs[start:stop])
                out[..., start:stop] = block
                self._convert_freq_inplace(out[..., start:stop], ch, 2, fq[start:stop], 3)
            return out
        per_frame = pe.size * ch.size * xs.size * itemsize
        step = max(1, _BLOCK_BYTES // max(per_frame, 1))
        for start in range(0, fr.size, step):
            stop = min(fr.size, start + step)
            block = self._read_canonical(fr_st[start:stop], pe, ch, xs)
            if ft:
                out[start:stop] = self._convert_freq(block, ch, 2, fq, 3)
            else:
                out[start:stop] = np.fft.rfft(self._convert_time(block, ch, 2), axis=-1)[..., fq]
        return out

    def system_matrix(
        self, frequencies: Any = None, channels: Any = None, period: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of a calibration's system matrix and its background frames.

        Parameters
        ----------
        frequencies : None, int, slice or sequence of int, optional
            Indices into the full K axis; None selects
            :attr:`available_frequencies`. Any order; duplicates allowed.
        channels : None, int, slice or sequence of int, optional
            0-based receive channels.
        period : int, optional
            The period (patch) j, 0-based.

        Returns
        -------
        S : ndarray of complex128, shape (C_sel, K_sel, O)
            Foreground frames in stored (file) order, which for a calibration
            is grid order with x fastest, then y, then z.
        background : ndarray of complex128, shape (C_sel, K_sel, E)
            The E background frames in stored order.

        Raises
        ------
        MDFError
            If the file is not a calibration, or a selection is out of range.

        Notes
        -----
        Works for fast-frame-axis (J x C x K x N), plain (N x J x C x K),
        time-domain (N x J x C x V, rfft per frame) and compressed
        (J x C x K x (B+E), DCT-I..IV with ``subsamplingIndices``) layouts.
        Only the selected rows are read, in blocks of about 64 MiB.
        """
        if self.kind != "calibration":
            raise MDFError(f"{self.path}: system_matrix() needs a calibration file; this file is a {self.kind}")
        pe = _as_indices(period, self.num_periods, "period")
        ch = _as_indices(channels, self.num_receive_channels, "channel")
        fq = (
            self.available_frequencies.copy()
            if frequencies is None
            else _as_indices(frequencies, self.num_frequencies, "frequency")
        )
        bg = self._bg_stored
        fg_idx, bg_idx = np.flatnonzero(~bg), np.flatnonzero(bg)
        if self.layout["isSparsityTransformed"]:
            return self._sparse_system_matrix(pe, ch, fq, fg_idx, bg_idx)

        n_fg, n_bg = fg_idx.size, bg_idx.size
        S = np.empty((ch.size, fq.size, n_fg), dtype=np.complex128)
        B = np.empty((ch.size, fq.size, n_bg), dtype=np.complex128)
        if 0 in (ch.size, fq.size):
            return S, B
        all_frames = np.arange(self._stored["N"])
        itemsize = self._dataset.dtype.itemsize * (2 if self._pairs else 1)
        fg_slice = _as_slice(fg_idx)
        bg_slice = _as_slice(bg_idx)

        def store(rows: slice, block: np.ndarray) -> None:
            # block: (C_sel, K_block, N), any numeric dtype -> split into foreground/background.
            # Slices keep these views (no copy); the cast to complex128 happens on assignment.
            S[:, rows] = block[..., fg_slice if fg_slice is not None else fg_idx]
            B[:, rows] = block[..., bg_slice if bg_slice is not None else bg_idx]

        if self.layout["isFourierTransformed"]:
            xs = self._stored_freq_positions(fq)
            per_row = ch.size * self._stored["N"] * itemsize
            step = max(1, _BLOCK_BYTES // max(per_row, 1))
            for start in range(0, fq.size, step):
                stop = min(fq.size, start + step)
                block = self._read_canonical(all_frames, pe, ch, xs[start:stop])  # (N, 1, C, k)
                rows = slice(start, stop)
                store(rows, np.transpose(block[:, 0], (1, 2, 0)))
                del block
                self._convert_freq_inplace(S[:, rows], ch, 0, fq[rows], 1)
                self._convert_freq_inplace(B[:, rows], ch, 0, fq[rows], 1)
        else:
            # time domain: whole periods must be read to transform them; go frame block by frame block
            V = self.num_sampling_points
            per_frame = ch.size * V * itemsize
            step = max(1, _BLOCK_BYTES // max(per_frame, 1))
            full = np.empty((ch.size, fq.size, self._stored["N"]), dtype=np.complex128)
            for start in range(0, self._stored["N"], step):
                stop = min(self._stored["N"], start + step)
                raw = self._read_canonical(all_frames[start:stop], pe, ch, np.arange(V))[:, 0]  # (n, C, V)
                spec = np.fft.rfft(self._convert_time(raw, ch, 1), axis=-1)[..., fq]  # (n, C, K_sel)
                full[..., start:stop] = np.transpose(spec, (1, 2, 0))
            store(slice(None), full)
        return S, B

    def _sparse_system_matrix(self, pe, ch, fq, fg_idx, bg_idx):
        """Decompress rows of a sparsity-transformed (v2.1) system matrix."""
        if self.calibration_size is None:
            raise MDFError(f"{self.path}: compressed system matrix without /calibration/size")
        nx, ny, nz = self.calibration_size
        O = nx * ny * nz
        grid = (nz, ny, nx)  # numpy C order: x varies fastest
        axes = tuple(1 + a for a, s in enumerate(grid) if s > 1)  # DCT over length-1 axes is undefined for type I
        sub = self._h5["/measurement/subsamplingIndices"]
        n_coef = fg_idx.size
        if sub.ndim != 4 or sub.shape[-1] != n_coef:
            raise MDFError(
                f"{self.path}: /measurement/subsamplingIndices has shape {sub.shape}, expected "
                f"({self.num_periods}, {self.num_receive_channels}, {self._stored['X']}, {n_coef})"
            )
        xs = self._stored_freq_positions(fq)
        S = np.empty((ch.size, fq.size, O), dtype=np.complex128)
        Bg = np.empty((ch.size, fq.size, bg_idx.size), dtype=np.complex128)
        base = None  # 0- or 1-based indices: decided once from the first block read
        all_frames = np.arange(self._stored["N"])
        per_row = ch.size * (O * 16 + self._stored["N"] * self._dataset.dtype.itemsize)
        step = max(1, _BLOCK_BYTES // max(per_row, 1))
        for start in range(0, fq.size, step):
            stop = min(fq.size, start + step)
            block = self._read_canonical(all_frames, pe, ch, xs[start:stop])[:, 0]  # (N, C, k)
            block = self._convert_freq(block, ch, 1, fq[start:stop], 2, offset=False)
            block = np.transpose(block, (1, 2, 0))  # (C, k, N)
            Bg[:, start:stop] = block[..., bg_idx]
            coef = block[..., fg_idx].reshape(-1, n_coef)  # (C*k, B)
            idx = _read_selected(sub, [pe, ch, xs[start:stop], np.arange(n_coef)])[0]
            idx = idx.reshape(-1, n_coef).astype(np.int64)
            if base is None:
                base = 0 if (idx.size and idx.min() == 0) else 1
            idx = idx - base
            if idx.size and (idx.min() < 0 or idx.max() >= O):
                raise MDFError(
                    f"{self.path}: subsamplingIndices run from {idx.min() + base} to {idx.max() + base}, "
                    f"outside the {O} grid positions"
                )
            dense = np.zeros((coef.shape[0], O), dtype=np.complex128)
            np.put_along_axis(dense, idx, coef, axis=1)
            dense = dense.reshape((coef.shape[0],) + grid)
            if axes:
                dense = scipy.fft.idctn(dense, type=self._dct_type, axes=axes, norm="ortho")
            S[:, start:stop] = dense.reshape(ch.size, stop - start, O)
        return S, Bg

    def reconstruction(self) -> tuple[np.ndarray, dict]:
        """The reconstructed image and how it was made.

        Returns
        -------
        data : ndarray of float, shape (Q, P, S)
            Q frames, P voxels (x fastest), S multispectral channels; in the
            unit given by ``metadata["unit"]`` (default mol/L).
        metadata : dict
            ``size`` (list of 3 int: x, y, z), ``fieldOfView`` and
            ``fieldOfViewCenter`` (ndarray (3,), m), ``order`` (str),
            ``unit`` (str or None), ``parameters`` (dict, from the JSON in
            ``/reconstruction/_parameters``; empty when absent).
        """
        if "/reconstruction/data" not in self._h5:
            raise MDFError(f"{self.path}: no /reconstruction/data: this file is a {self.kind}")
        data = np.asarray(self.field("/reconstruction/data"))
        if data.dtype.kind not in "iuf":
            raise MDFError(f"{self.path}: /reconstruction/data has dtype {data.dtype}, expected real numbers")
        if data.dtype.kind != "f":
            data = data.astype(np.float64)
        if data.ndim != 3:
            raise MDFError(f"{self.path}: /reconstruction/data has shape {data.shape}, expected Q x P x S")
        size = self.field("/reconstruction/size", None)
        raw_params = self.field("/reconstruction/_parameters", None)
        try:
            params = json.loads(raw_params) if raw_params else {}
        except json.JSONDecodeError as exc:
            raise MDFError(f"{self.path}: /reconstruction/_parameters is not valid JSON: {exc}") from None
        meta = {
            "size": None if size is None else [int(s) for s in np.ravel(size)],
            "fieldOfView": np.asarray(self.field("/reconstruction/fieldOfView", np.full(3, np.nan)), dtype=float),
            "fieldOfViewCenter": np.asarray(self.field("/reconstruction/fieldOfViewCenter", np.zeros(3)), dtype=float),
            "order": str(self.field("/reconstruction/order", "xyz")),
            "unit": self.field("/reconstruction/_unit", None),
            "parameters": params,
        }
        if meta["size"] is not None and int(np.prod(meta["size"])) != data.shape[1]:
            raise MDFError(
                f"{self.path}: /reconstruction/data has {data.shape[1]} voxels but size "
                f"{meta['size']} holds {int(np.prod(meta['size']))}"
            )
        return data, meta


def _as_slice(idx: np.ndarray) -> slice | None:
    """A slice equal to a sorted run of consecutive indices, else None (avoids a copy)."""
    if idx.size == 0:
        return slice(0, 0)
    if idx[-1] - idx[0] + 1 == idx.size and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return None


# --------------------------------------------------------------------------- #
# writer
# --------------------------------------------------------------------------- #

# Required general groups get "n.a." values when the caller did not set them,
# so every file the platform writes passes validation.
GENERAL_DEFAULTS: dict[str, Any] = {
    "/study/name": "n.a.",
    "/study/description": "n.a.",
    "/study/number": 0,
    "/experiment/name": "n.a.",
    "/experiment/description": "n.a.",
    "/experiment/subject": "n.a.",
    "/experiment/number": 0,
    "/experiment/isSimulation": False,
    "/scanner/facility": "n.a.",
    "/scanner/manufacturer": "n.a.",
    "/scanner/name": "n.a.",
    "/scanner/operator": "n.a.",
    "/scanner/topology": "FFP",
}


def to_storable(path: str, value: Any) -> np.ndarray:
    """Convert a Python/numpy value to the array MDF stores for it (the types of :func:`write_mdf`):
    ``str`` -> fixed-length bytes, list of str -> fixed-length bytes, ``bool`` -> int8, ``int`` -> int64,
    ``float`` -> float64, nested lists of numbers -> int64 or float64 arrays, numpy arrays keep their dtype."""
    if isinstance(value, (str, bytes)):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        return np.array(raw, dtype=f"S{max(len(raw), 1)}")
    if isinstance(value, (bool, np.bool_)):
        return np.array(value, dtype=np.int8)
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.ndarray):
        return np.array(value, dtype=np.int64 if isinstance(value, int) else value.dtype)
    if isinstance(value, float):
        return np.array(value, dtype=np.float64)
    if isinstance(value, complex):
        return np.array(value, dtype=np.complex128)
    if isinstance(value, np.ndarray):
        arr = value
    else:
        items = list(value) if isinstance(value, (list, tuple)) else None
        if items is not None and items and all(isinstance(v, (str, bytes)) for v in items):
            enc = [v.encode("utf-8") if isinstance(v, str) else v for v in items]
            return np.array(enc, dtype=f"S{max(max(len(e) for e in enc), 1)}")
        arr = np.asarray(value)
        if arr.dtype.kind == "i":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float64)
    if arr.dtype.kind == "b":
        return arr.astype(np.int8)
    if arr.dtype.kind == "U":
        encoded = np.char.encode(arr, "utf-8")
        return encoded.astype(f"S{max(encoded.dtype.itemsize, 1)}")
    if arr.dtype.kind == "O":
        raise MDFError(f"cannot store {path}: object array (mixed or non-numeric values)")
    return arr


def _chunks_for(path: str, arr: np.ndarray, fast_frame_axis: bool) -> Any:
    if arr.nbytes <= _CHUNK_THRESHOLD_BYTES or arr.ndim == 0:
        return None
    if path == "/measurement/data" and fast_frame_axis and arr.ndim in (4, 5):
        # J x C x K x N: a chunk holds whole rows (all N frames of a few
        # frequencies) so reading selected rows touches only their chunks.
        row_bytes = int(np.prod(arr.shape[3:])) * arr.dtype.itemsize
        k = int(max(1, min(arr.shape[2], _CHUNK_TARGET_BYTES // max(row_bytes, 1))))
        return (1, 1, k) + tuple(arr.shape[3:])
    return True


#: The measurement flags of a raw scan as acquired: time-domain N x J x C x V, nothing
#: corrected, selected, permuted or transformed (the simulators and the live recording).
RAW_MEASUREMENT_FLAGS = {
    "/measurement/isBackgroundCorrected": False,
    "/measurement/isFastFrameAxis": False,
    "/measurement/isFourierTransformed": False,
    "/measurement/isFramePermutation": False,
    "/measurement/isFrequencySelection": False,
    "/measurement/isSparsityTransformed": False,
    "/measurement/isSpectralLeakageCorrected": False,
    "/measurement/isTransferFunctionCorrected": False,
}


def write_mdf(
    path: str | os.PathLike, fields: Mapping[str, Any], *, version: str = "2.1.0", compression: str | None = None
) -> None:
    """Write an MDF file from datasets keyed by absolute HDF5 path.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. Written to ``path + ".tmp"`` first and moved into place
        with :func:`os.replace`, so readers never see a half-written file.
    fields : mapping of str to value
        E.g. ``{"/acquisition/drivefield/baseFrequency": 2.5e6,
        "/measurement/data": arr, ...}``. Python ``str`` -> fixed-length byte
        string; list of str -> fixed-length byte strings; ``bool`` and bool
        arrays -> int8; Python ``int`` -> int64; Python ``float`` -> float64;
        numpy arrays keep their dtype (int16 raw data stays int16), complex
        arrays are stored as the compound ``{r, i}`` MDF expects.
    version : str, optional
        Written to ``/version`` unless ``fields`` has one.
    compression : str, optional
        h5py filter (e.g. ``"gzip"``) for datasets larger than 1 MiB.

    Notes
    -----
    ``/version``, ``/uuid`` and ``/time`` (UTC, ISO 8601) and the required
    ``/study``, ``/experiment`` and ``/scanner`` fields are filled in when
    missing. Datasets larger than 1 MiB are chunked; a fast-frame-axis
    ``/measurement/data`` (J x C x K x N) is chunked along K with whole rows
    per chunk, so reading a few rows of a huge system matrix is cheap.
    """
    path = os.fspath(path)
    all_fields: dict[str, Any] = {
        "/version": version,
        "/uuid": str(_uuid.uuid4()),
        "/time": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    all_fields.update(GENERAL_DEFAULTS)
    for key, value in fields.items():
        if not key.startswith("/"):
            raise MDFError(f"field name {key!r} must be an absolute path starting with '/'")
        all_fields[key] = value
    if "/study/uuid" not in all_fields:
        all_fields["/study/uuid"] = str(_uuid.uuid4())
    if "/experiment/uuid" not in all_fields:
        all_fields["/experiment/uuid"] = str(_uuid.uuid4())
    fast = bool(
        np.asarray(
            all_fields.get("/measurement/isFastFrameAxis", all_fields.get("/measurement/isTransposed", 0))
        ).ravel()[0]
    )

    tmp = path + ".tmp"
    try:
        with h5py.File(tmp, "w") as h5:
            for key in sorted(all_fields):
                value = all_fields[key]
                if value is None:
                    continue
                arr = to_storable(key, value)
                chunks = _chunks_for(key, arr, fast)
                kwargs: dict[str, Any] = {}
                if chunks is not None:
                    kwargs["chunks"] = chunks
                    if compression:
                        kwargs["compression"] = compression
                h5.create_dataset(key, data=arr, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def voxel_positions(size: Any, field_of_view_m: Any, field_of_view_center_m: Any) -> np.ndarray:
    """Centres of the voxels of a regular grid, x fastest.

    Parameters
    ----------
    size : sequence of 3 int
        Grid size (x, y, z).
    field_of_view_m, field_of_view_center_m : sequence of 3 float
        Extent and centre of the grid in m.

    Returns
    -------
    ndarray of float64, shape (P, 3)
        (x, y, z) in m of voxel p, with p = ix + nx * (iy + ny * iz).
    """
    size = np.asarray(size, dtype=np.int64).ravel()
    fov = np.asarray(field_of_view_m, dtype=float).ravel()
    ctr = np.asarray(field_of_view_center_m, dtype=float).ravel()
    if size.size != 3 or fov.size != 3 or ctr.size != 3:
        raise ValueError(f"size, field of view and centre need 3 values each, got {size.size}, {fov.size}, {ctr.size}")
    axes = [ctr[a] - fov[a] / 2 + (np.arange(size[a]) + 0.5) * fov[a] / size[a] for a in range(3)]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def write_reconstruction(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    size: Any,
    field_of_view_m: Any,
    field_of_view_center_m: Any,
    parameters: dict,
    unit: str = "mol/L",
    order: str = "xyz",
    extra_fields: Mapping[str, Any] | None = None,
) -> None:
    """Write a reconstructed image as an MDF v2.1 reconstruction file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (written atomically).
    data : array_like of float, shape (Q, P, S), (Q, P) or (P,)
        Image values, voxel index p = ix + nx * (iy + ny * iz); stored as
        float32 with shape (Q, P, S).
    size : sequence of 3 int
        Grid (x, y, z); ``prod(size)`` must equal P.
    field_of_view_m, field_of_view_center_m : sequence of 3 float
        Grid extent and centre in m.
    parameters : dict
        How the image was made (solver, lambda, ...); stored as JSON in
        ``/reconstruction/_parameters`` so the image can be reproduced.
    unit : str, optional
        Unit of the values, stored in ``/reconstruction/_unit``.
    order : str, optional
        Axis order, ``"xyz"``.
    extra_fields : mapping, optional
        More datasets (absolute paths) to write, e.g. provenance; they win
        over the defaults.
    """
    arr = np.asarray(data)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"reconstruction data must be real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[np.newaxis, :, np.newaxis]
    elif arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    elif arr.ndim != 3:
        raise ValueError(f"reconstruction data must be Q x P x S, got shape {arr.shape}")
    size_arr = np.asarray(size, dtype=np.int64).ravel()
    if size_arr.size != 3:
        raise ValueError(f"size needs 3 values (x, y, z), got {size_arr.tolist()}")
    n_vox = int(np.prod(size_arr))
    if n_vox != arr.shape[1]:
        raise ValueError(f"data has {arr.shape[1]} voxels but size {size_arr.tolist()} holds {n_vox}")
    positions = voxel_positions(size_arr, field_of_view_m, field_of_view_center_m)
    fields: dict[str, Any] = {
        "/reconstruction/data": arr.astype(np.float32),
        "/reconstruction/size": size_arr,
        "/reconstruction/fieldOfView": np.asarray(field_of_view_m, dtype=np.float64).ravel(),
        "/reconstruction/fieldOfViewCenter": np.asarray(field_of_view_center_m, dtype=np.float64).ravel(),
        "/reconstruction/order": order,
        "/reconstruction/positions": positions,
        "/reconstruction/isOverscanRegion": np.zeros(n_vox, dtype=np.int8),
        "/reconstruction/_unit": unit,
        "/reconstruction/_parameters": json.dumps(parameters, sort_keys=True, default=_json_default),
    }
    if extra_fields:
        fields.update(extra_fields)
    write_mdf(path, fields, version="2.1.0")
