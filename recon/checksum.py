"""The SHA-256 of a file on disk: the one place the platform and ``recon`` hash a file
(provenance of reconstructions, stored scans and system matrices)."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at ``path``, read in bounded pieces."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
