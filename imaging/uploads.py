"""Resumable scan uploads: the tus 1.0.0 protocol, implemented here.

No maintained Django tus server exists, so the platform speaks the protocol itself:
the core protocol plus the ``creation``, ``checksum`` (sha256) and ``termination``
extensions (https://tus.io/protocols/resumable-upload). Every request and response
carries ``Tus-Resumable: 1.0.0``; a request naming another version gets 412.

Discovery
    ``OPTIONS /api/v1/uploads/`` → 204 with ``Tus-Version: 1.0.0``,
    ``Tus-Extension: creation,checksum,termination``, ``Tus-Max-Size`` and
    ``Tus-Checksum-Algorithm: sha256``.

Creation
    ``POST /api/v1/uploads/`` with ``Upload-Length`` (bytes of the whole file) and
    ``Upload-Metadata``: comma-separated ``key base64(value)`` pairs with the keys
    ``subject`` (subject id), ``injection`` (injection id), ``hours`` (time point,
    hours after injection), ``scanner`` (scanner id), ``sha256`` (hex digest of the
    whole file) and ``filename``. → 201 with ``Location`` of the new upload.
    Refusals: 413 when Upload-Length exceeds ``IMAGING_UPLOAD_MAX_BYTES``; 409 when
    the same file (sha256) was already uploaded for the subject (the message names
    the scan); 409 when the subject has no imaging consent in force (audited as
    UPLOAD_REFUSED); 409 when no active system matrix of the scanner fits the tracer;
    404 when the subject is not at one of the caller's sites.

Offset
    ``HEAD /api/v1/uploads/{id}/`` → 200 with ``Upload-Offset`` and ``Upload-Length``
    (``Cache-Control: no-store``). A client resumes from ``Upload-Offset``.

Append
    ``PATCH /api/v1/uploads/{id}/`` with ``Content-Type:
    application/offset+octet-stream``, ``Upload-Offset`` (must equal the server's
    offset, else 409) and optionally ``Upload-Checksum: sha256 <base64 digest of
    this request's body>``. → 204 with the new ``Upload-Offset``. A checksum
    mismatch answers 460 Checksum Mismatch: the chunk is discarded, the offset is
    unchanged and the upload continues with the next PATCH. A body that would go
    past ``Upload-Length`` answers 413. The PATCH that reaches ``Upload-Length``
    completes the upload: imaging consent is checked again and a Scan (status
    ``received``) is created; its id is returned in the ``Scan-Id`` header and
    ``Location`` of the scan is in ``Scan-Location``. The whole-file sha256 is then
    verified by the validation task, first thing: a file whose digest differs from
    the declared one is ``rejected`` with both digests in the reason (bytes kept).

Termination
    ``DELETE /api/v1/uploads/{id}/`` → 204; the partial file is removed.

The body is moved into the file by ``config.request_body`` (never ``request.body``; under
gunicorn from the socket to the file inside the kernel) and hashed from the file in
pieces of ``IMAGING_UPLOAD_PIECE_BYTES``, so a 10 GB file needs a few MiB of memory. hashlib objects cannot
be pickled or stored between requests, so each PATCH hashes only its own chunk (for
Upload-Checksum) and the whole file is hashed once, by streaming it, in the ingest
task: hashing 10 GB takes tens of seconds, too long to hold the last PATCH open
behind a proxy, and every byte already arrived under a per-chunk checksum.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import ctypes
import ctypes.util
import fcntl
import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from config.errors import RuleViolation

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,checksum,termination"
TUS_CHECKSUM_ALGORITHMS = "sha256"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
CHECKSUM_MISMATCH = 460

METADATA_KEYS = ("subject", "injection", "hours", "scanner", "sha256", "filename")


def media_path(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


def parse_metadata(header: str | None) -> dict[str, str]:
    """``key base64,key2 base64`` → {key: decoded value}; a key may have no value."""
    values: dict[str, str] = {}
    for pair in (header or "").split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, encoded = pair.partition(" ")
        try:
            values[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8") if encoded else ""
        except (binascii.Error, UnicodeDecodeError):
            raise RuleViolation("invalid_metadata", f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text.",
                                field="Upload-Metadata", status_code=400) from None
    return values


def encode_metadata(values: dict[str, object]) -> str:
    return ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in values.items())


def parse_checksum(header: str | None) -> bytes | None:
    """``sha256 <base64>`` → the 32-byte digest, or None when absent."""
    if not header:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm.lower() != "sha256":
        raise RuleViolation("unsupported_checksum", f"Upload-Checksum algorithm {algorithm!r} is not supported "
                            "(use sha256).", field="Upload-Checksum", status_code=400)
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != 32:
        raise RuleViolation("invalid_checksum", "Upload-Checksum must be 'sha256 <base64 of the 32-byte digest>'.",
                            field="Upload-Checksum", status_code=400)
    return digest


def create_empty(relative: str) -> None:
    path = media_path(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=False)


def _sync_file_range():
    """Linux's sync_file_range(2), which Python's os module lacks; None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, count: int) -> None:
    """Ask the kernel to start writing these bytes to disk now, without waiting for it.

    The fsync that ends each PATCH then finds most of the chunk already on disk, so disk
    writes overlap with receiving instead of following it (the copy baseline's writes
    overlap its reads the same way). Only a hint: the fsync is what makes the chunk durable.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, count, _SYNC_FILE_RANGE_WRITE)


@dataclass(frozen=True)
class AppendResult:
    written: int
    checksum_ok: bool


def _hash_range(fd: int, digest, buffer: memoryview, position: int, count: int) -> None:
    """Add ``count`` bytes of the file from ``position`` to ``digest`` (pages just written,
    so still in memory: a read from the page cache, not from the disk)."""
    while count:
        got = os.preadv(fd, [buffer[:min(count, len(buffer))]], position)
        if got == 0:
            raise OSError(f"the upload file ended at {position} while hashing what was just written")
        digest.update(buffer[:got])
        position += got
        count -= got


def append_chunk(relative: str, *, offset: int, source, max_bytes: int,
                 expected_digest: bytes | None) -> AppendResult:
    """Move the request body into the file at ``offset``; hash what landed there, on a
    second thread.

    ``source.write_into(fd, limit)`` moves body bytes into the file (see
    ``config.request_body``: under gunicorn, socket to file inside the kernel). Every
    ``IMAGING_UPLOAD_PIECE_BYTES`` the sha256 thread is given the new piece to read back
    from the page cache (hashlib and the reads release the GIL, so hashing runs beside
    the transfer) and the kernel is asked to start writing it to disk. The checksum thus
    covers the bytes as stored. At most ``max_bytes`` are accepted: a longer body is
    refused with 413 and discarded. When ``expected_digest`` is given and does not match,
    the file is cut back to ``offset`` so the chunk leaves no trace.
    """
    piece = settings.IMAGING_UPLOAD_PIECE_BYTES
    buffer = memoryview(bytearray(piece))  # the sha256 thread's
    digest = hashlib.sha256()
    written = hashed_to = 0  # bytes of this chunk moved into the file / handed to the sha256 thread
    fd = os.open(media_path(relative), os.O_RDWR)
    try:
        os.ftruncate(fd, offset)  # a chunk discarded mid-way by a dropped connection leaves nothing behind
        os.lseek(fd, offset, os.SEEK_SET)
        with ThreadPoolExecutor(1, thread_name_prefix="upload-sha256") as hasher:  # one thread: pieces in order
            pending: collections.deque[Future] = collections.deque()

            def hand_over(upto: int) -> None:
                nonlocal hashed_to
                if expected_digest is not None:  # no Upload-Checksum, nothing to verify (ingest checks the file)
                    pending.append(hasher.submit(_hash_range, fd, digest, buffer, offset + hashed_to,
                                                 upto - hashed_to))
                start_writeback(fd, offset + hashed_to, upto - hashed_to)
                hashed_to = upto
                while len(pending) > 2:  # the hasher stays close behind: what it reads is still cached
                    pending.popleft().result()

            try:
                # Ask for one byte more than may still come, so a body longer than allowed is noticed.
                while count := source.write_into(fd, max_bytes - written + 1):
                    written += count
                    if written > max_bytes:
                        raise RuleViolation("upload_too_large", f"The chunk goes past Upload-Length: at most "
                                            f"{max_bytes} more bytes are expected from offset {offset}.",
                                            status_code=413)
                    if written - hashed_to >= piece:
                        hand_over(written)
                if written > hashed_to:
                    hand_over(written)
                while pending:
                    pending.popleft().result()
                if expected_digest is not None and digest.digest() != expected_digest:
                    os.ftruncate(fd, offset)
                    return AppendResult(0, False)
            except BaseException:
                os.ftruncate(fd, offset)
                raise
        os.fsync(fd)
    finally:
        os.close(fd)
    return AppendResult(written, True)


@contextlib.contextmanager
def exclusive(relative: str):
    """Hold the upload's file for one writer: a second PATCH on the same upload while one
    is streaming is refused (409) instead of writing over the bytes being accepted."""
    try:
        fh = open(media_path(relative), "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise RuleViolation("upload_closed", "The upload is no longer open.") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuleViolation("upload_busy", "Another request is writing to this upload: HEAD and resume from "
                                "its offset when it has finished.") from None
        yield
    finally:
        fh.close()  # releases the lock


def file_sha256(relative: str) -> str:
    """Stream the file through sha256 (bounded memory whatever its size)."""
    digest = hashlib.sha256()
    piece = settings.IMAGING_UPLOAD_PIECE_BYTES
    with open(media_path(relative), "rb") as fh:
        while block := fh.read(piece):
            digest.update(block)
    return digest.hexdigest()


def remove(relative: str) -> None:
    try:
        media_path(relative).unlink()
    except FileNotFoundError:
        pass
