"""The SHA-256 of a file on disk: the one place the platform and ``recon`` hash a file
(provenance of reconstructions, stored scans and system matrices)."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at ``path``, read in bounded pieces."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


_SAMPLE_BYTES = 64 * 1024
_SAMPLES = 32


def sampled_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's size and 64 KiB read at 32 evenly spaced offsets (first and
    last included): catches a truncated, resized or overwritten-at-the-ends cache file in
    milliseconds without reading all of a multi-GB file (not a full integrity check: a
    change between the samples goes unseen)."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        span = max(size - _SAMPLE_BYTES, 0)
        for i in range(_SAMPLES):
            fh.seek(span * i // (_SAMPLES - 1))
            h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()
