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

    A calibration (a system-matrix MDF for a scanner's library) travels the same way:
    ``Upload-Metadata`` with ``kind calibration`` and the keys ``scanner`` (scanner id),
    ``sha256`` and ``filename`` only (no subject, injection or time point), by imaging
    staff of the scanner's site. ``kind`` absent or ``scan`` is a scan upload as above;
    another ``kind`` is 400. Refusals: 404 when the scanner is not at one of the caller's
    sites; 403 for another role; 409 ``duplicate_system_matrix`` when the file (sha256)
    is already in the scanner's library. The PATCH that completes a calibration upload
    creates no scan (no ``Scan-Id``): the file waits, complete, until
    ``POST /api/v1/system-matrices/`` with ``{"upload": <id>, "scanner", "name",
    "tracer_product", "nanoparticle_lot"?}`` validates and registers it (the whole
    file's sha256 is checked then) and removes the upload's copy. A file refused there
    for what it is (not valid, not a calibration, already in the library, another
    digest than declared) closes the upload and removes its bytes (audited as
    UPLOAD_REFUSED); registering it again answers 404 ``upload_terminated``.

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

The body is read by ``config.request_body.RequestBody`` (never ``request.body``): Django's
``request.read(n)`` over the server's ``wsgi.input``, documented interfaces only, at most
``READ_BYTES`` at a time. It is gathered into one page-aligned piece of
``IMAGING_UPLOAD_PIECE_BYTES``, which is hashed and written with O_DIRECT before the next is
read (``append_chunk``), so a 10 GB file needs one piece of memory. hashlib objects cannot be
pickled or stored between requests, so each PATCH hashes only its own chunk (for
Upload-Checksum) and the whole file is hashed once, by streaming it, in the ingest task:
hashing 10 GB takes tens of seconds, too long to hold the last PATCH open behind a proxy,
and every byte already arrived under a per-chunk checksum.

What each part of the receiver costs and buys (issue #13), measured with
``benchmarks/upload.py --size-mb 1024 --rounds 3 --no-metrics``: gunicorn 27, one worker with
2 threads, 64 MiB PATCHes with Upload-Checksum, loopback, on this project's 2-core VM while
other work shared it (load average 6-10). Variants ran alternately so that each saw the same
load; each figure is one run's median of 3 rounds:

===========================================================  =================  ==================
receiver -> ``append_chunk``                                  upload MiB/s       web CPU s/GiB
===========================================================  =================  ==================
before: gunicorn's private reader (``recv_into`` from its     192, 211,          1.86, 1.77,
socket), O_DIRECT, 2 thread pools, 4 mmap pieces in flight    250, 241           1.74, 1.77
``request.read`` (4 MiB) -> the same O_DIRECT, thread pools   137, 139           2.38, 2.42
``request.read`` (4 MiB) -> O_DIRECT, one piece, no threads   149, 136, 162,     2.28, 2.26, 2.32,
                                                              151, 137           2.58, 2.53
**now**: ``request.read`` (1 MiB) -> O_DIRECT, one piece      167, 164, 257      2.07, 2.10, 1.76
``request.read`` (4 MiB) -> hash, write through the page      89, 76             3.98, 4.10
cache (no O_DIRECT, no mmap, no threads)
===========================================================  =================  ==================

The target is 1 Gbit/s (119 MiB/s) per upload; the receiver now holds it in every run.
Reading through the documented interface costs up to 0.3 s of CPU per GiB more than the
private socket reader did (gunicorn copies each ``read`` out of its own buffers; in the last
pair of runs the two were level); asking for at most 1 MiB at a time (gunicorn 27's own step)
instead of a whole piece saves 0.2-0.5 s per GiB of reassembly. The two thread pools (hashing
and writing beside the receive) bought nothing on 2 shared cores: gone. O_DIRECT pays: through
the page cache the worker spends 1.7 s more CPU per GiB (system time: filling, writing back
and reclaiming the cache) and falls below the target under load, so it stays, with the
aligned buffer it needs (one anonymous map).
The worker's peak memory (VmHWM) during 3 x 1 GiB of uploads: 205-207 MiB, 15-17 MiB above
its size before the first upload (before: 210 MiB, 19.5 MiB above).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from config.errors import RuleViolation
from recon.checksum import sha256_file

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,checksum,termination"
TUS_CHECKSUM_ALGORITHMS = "sha256"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
CHECKSUM_MISMATCH = 460

METADATA_KEYS = ("subject", "injection", "hours", "scanner", "sha256", "filename")
# Upload-Metadata ``kind``: absent or ``scan`` (METADATA_KEYS), or ``calibration`` (these).
UPLOAD_KINDS = ("scan", "calibration")
CALIBRATION_METADATA_KEYS = ("scanner", "sha256", "filename")


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
            raise RuleViolation(
                "invalid_metadata",
                f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text.",
                field="Upload-Metadata",
            ) from None
    return values


def encode_metadata(values: dict[str, object]) -> str:
    return ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in values.items())


def parse_checksum(header: str | None) -> bytes | None:
    """``sha256 <base64>`` → the 32-byte digest, or None when absent."""
    if not header:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm.lower() != "sha256":
        raise RuleViolation(
            "unsupported_checksum",
            f"Upload-Checksum algorithm {algorithm!r} is not supported (use sha256).",
            field="Upload-Checksum",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != 32:
        raise RuleViolation(
            "invalid_checksum",
            "Upload-Checksum must be 'sha256 <base64 of the 32-byte digest>'.",
            field="Upload-Checksum",
        )
    return digest


def create_empty(relative: str) -> None:
    path = media_path(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=False)


DIRECT_ALIGN = 4096  # O_DIRECT wants file offsets, lengths and buffer addresses in whole logical blocks
# The most asked of the body in one read: a WSGI server hands over what it holds and copies to
# assemble more (gunicorn 27 reads 1 MiB per step); measured in the table above.
READ_BYTES = 1 << 20


@dataclass(frozen=True)
class AppendResult:
    written: int
    checksum_ok: bool


def _pwrite_all(fd: int, data: memoryview, position: int) -> None:
    while data:
        count = os.pwritev(fd, [data], position)
        data, position = data[count:], position + count


class _PieceWriter:
    """Writes pieces of one chunk to the upload's file.

    Whole 4 KiB blocks go through a second descriptor opened with ``O_DIRECT``: from the
    piece's buffer to the disk, with no copy into the page cache and no dirty pages for the
    kernel to write back and reclaim later. The partial blocks at the ends of a chunk go
    through the page cache, so chunks may start and end at any byte. A file system without
    O_DIRECT (refused at open or at the first write) gets every byte through the page cache.
    """

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY)
        self.direct: int | None = None
        if hasattr(os, "O_DIRECT"):  # Linux
            try:
                self.direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: this file system has no direct I/O
                    os.close(self.fd)
                    raise

    def write(self, buffer: memoryview, start: int, end: int, position: int) -> None:
        """``buffer[start:end]`` to the file at ``position + start``; ``position`` (where
        ``buffer[0]`` belongs) is a multiple of DIRECT_ALIGN and so is the buffer's address."""
        first = -(-start // DIRECT_ALIGN) * DIRECT_ALIGN  # the whole blocks: [first, last)
        last = end // DIRECT_ALIGN * DIRECT_ALIGN
        if self.direct is not None and first < last:
            try:
                _pwrite_all(self.direct, buffer[first:last], position + first)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: this file system takes no direct I/O of this size
                    raise
                os.close(self.direct)
                self.direct = None
                _pwrite_all(self.fd, buffer[first:last], position + first)
            _pwrite_all(self.fd, buffer[start:first], position + start)
            _pwrite_all(self.fd, buffer[last:end], position + last)
        else:
            _pwrite_all(self.fd, buffer[start:end], position + start)

    def close(self) -> None:
        for fd in (self.fd, self.direct):
            if fd is not None:
                os.close(fd)


def append_chunk(relative: str, *, offset: int, source, max_bytes: int, expected_digest: bytes | None) -> AppendResult:
    """Receive a chunk from ``source`` into the file at ``offset``, hashing it on the way.

    ``source.read(n)`` gives at most ``n`` more bytes, ``b""`` at the end (a binary file, or
    ``config.request_body.RequestBody``, which raises when the body ends early). The body is
    gathered into one page-aligned buffer of ``IMAGING_UPLOAD_PIECE_BYTES``; each full buffer
    is added to the sha256 and written (``_PieceWriter``, with O_DIRECT) before the next is
    read, so memory stays at one piece whatever the chunk's size. At most ``max_bytes`` are
    accepted: a longer body is refused with 413. When ``expected_digest`` is given and does not
    match, or on any error, the file is cut back to ``offset``: the chunk leaves no trace. The
    chunk is fsynced before this returns.
    """
    piece = settings.IMAGING_UPLOAD_PIECE_BYTES  # a multiple of DIRECT_ALIGN (settings)
    digest = hashlib.sha256() if expected_digest is not None else None  # no Upload-Checksum: ingest checks the file
    # An anonymous map is page-aligned, as O_DIRECT needs; buffer[0] belongs at an aligned file
    # position, so the first piece starts ``offset % DIRECT_ALIGN`` bytes in. (Unmapped when
    # the last view goes: an error's traceback may hold one a little longer.)
    buffer = memoryview(mmap.mmap(-1, piece))
    writer = _PieceWriter(media_path(relative))
    position, start = offset - offset % DIRECT_ALIGN, offset % DIRECT_ALIGN
    received = 0
    try:
        os.ftruncate(writer.fd, offset)  # a chunk discarded mid-way by a killed worker leaves nothing behind
        try:
            while True:
                end = start
                # Ask for one byte more than may still come, so a body longer than allowed is noticed.
                while end < piece and (data := source.read(min(piece - end, max_bytes - received + 1, READ_BYTES))):
                    received += len(data)
                    if received > max_bytes:
                        raise RuleViolation(
                            "upload_too_large",
                            f"The chunk goes past Upload-Length: at most {max_bytes} more bytes are expected "
                            f"from offset {offset}.",
                        )
                    buffer[end : end + len(data)] = data
                    end += len(data)
                if end > start:
                    if digest is not None:
                        digest.update(buffer[start:end])
                    writer.write(buffer, start, end, position)
                if end < piece:
                    break  # the body has ended
                position, start = position + piece, 0
            if digest is not None and digest.digest() != expected_digest:
                os.ftruncate(writer.fd, offset)
                return AppendResult(0, False)
            os.fsync(writer.fd)  # the direct writes' blocks, the ends' pages and the new size
        except BaseException:
            os.ftruncate(writer.fd, offset)
            raise
    finally:
        writer.close()
    return AppendResult(received, True)


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
            raise RuleViolation(
                "upload_busy",
                "Another request is writing to this upload: HEAD and resume from its offset when it has finished.",
            ) from None
        yield
    finally:
        fh.close()  # releases the lock


def file_sha256(relative: str) -> str:
    """The SHA-256 of a stored file (bounded memory whatever its size)."""
    return sha256_file(media_path(relative))


def remove(relative: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        media_path(relative).unlink()
