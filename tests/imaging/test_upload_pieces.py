"""imaging.uploads.append_chunk on its own: chunks at any offset and of any length land
byte-exact, with O_DIRECT for the whole blocks and the page cache for the ends, or with the
page cache alone where the file system takes no direct I/O; every failure cuts the file back
to where the chunk started."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.api_errors import status_for
from config.errors import RuleViolation
from imaging import uploads

PIECE = 8192
# Sizes that start and end inside blocks, on block edges, span many pieces, or are a byte.
CHUNK_SIZES = [1, 4095, 4097, 3 * PIECE + 17, 12_345, 4096, PIECE, 100_003, 2]


@pytest.fixture
def upload_file(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.IMAGING_UPLOAD_PIECE_BYTES = PIECE
    uploads.create_empty("u/original.mdf")
    return "u/original.mdf"


class DirectSpy:
    """Counts the bytes each kind of descriptor receives through os.pwritev."""

    def __init__(self, monkeypatch, fail=None) -> None:
        self.bytes = {"direct": 0, "cached": 0}
        self.fail = fail  # (kind, OSError) raised instead of writing
        real = os.pwritev

        def pwritev(fd, buffers, position):
            kind = "direct" if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT else "cached"
            if self.fail and self.fail[0] == kind:
                raise self.fail[1]
            written = real(fd, buffers, position)
            self.bytes[kind] += written
            return written

        monkeypatch.setattr(os, "pwritev", pwritev)


def direct_io_supported(folder) -> bool:
    try:
        os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600))
        return True
    except OSError:
        return False


def append_all(relative: str, data: bytes) -> None:
    offset = 0
    for size in CHUNK_SIZES:
        chunk = data[offset : offset + size]
        result = uploads.append_chunk(
            relative,
            offset=offset,
            source=io.BytesIO(chunk),
            max_bytes=len(data) - offset,
            expected_digest=hashlib.sha256(chunk).digest(),
        )
        assert result == uploads.AppendResult(len(chunk), True)
        offset += size


def test_chunks_at_any_offset_land_byte_exact_and_whole_blocks_go_direct(upload_file, monkeypatch, tmp_path):
    if not direct_io_supported(tmp_path):
        pytest.skip(f"{tmp_path} takes no O_DIRECT (tmpfs before Linux 6.6); the fallback tests cover it")
    data = os.urandom(sum(CHUNK_SIZES))
    spy = DirectSpy(monkeypatch)
    append_all(upload_file, data)
    assert uploads.media_path(upload_file).read_bytes() == data
    # Each chunk sends at most its two partial end blocks through the page cache.
    assert spy.bytes["cached"] <= len(CHUNK_SIZES) * 2 * uploads.DIRECT_ALIGN
    assert spy.bytes["direct"] + spy.bytes["cached"] == len(data)
    assert spy.bytes["direct"] > 0.7 * len(data)


def test_without_o_direct_every_byte_goes_through_the_page_cache(upload_file, monkeypatch):
    monkeypatch.delattr(os, "O_DIRECT")  # as on a platform that has none
    data = os.urandom(sum(CHUNK_SIZES))
    append_all(upload_file, data)
    assert uploads.media_path(upload_file).read_bytes() == data


def test_a_file_system_that_refuses_direct_writes_gets_them_through_the_page_cache(upload_file, monkeypatch, tmp_path):
    if not direct_io_supported(tmp_path):
        pytest.skip(f"{tmp_path} takes no O_DIRECT at open already")
    spy = DirectSpy(monkeypatch, fail=("direct", OSError(errno.EINVAL, "Invalid argument")))
    data = os.urandom(sum(CHUNK_SIZES))
    append_all(upload_file, data)
    assert uploads.media_path(upload_file).read_bytes() == data
    assert spy.bytes == {"direct": 0, "cached": len(data)}


@pytest.mark.parametrize("kind", ["direct", "cached"])
def test_a_write_that_fails_mid_chunk_cuts_the_file_back_and_raises(upload_file, monkeypatch, tmp_path, kind):
    if kind == "direct" and not direct_io_supported(tmp_path):
        pytest.skip(f"{tmp_path} takes no O_DIRECT")
    first = os.urandom(5_000)
    assert (
        uploads.append_chunk(
            upload_file, offset=0, source=io.BytesIO(first), max_bytes=10**9, expected_digest=None
        ).written
        == 5_000
    )
    DirectSpy(monkeypatch, fail=(kind, OSError(errno.ENOSPC, "No space left on device")))
    second = os.urandom(5 * PIECE)
    with pytest.raises(OSError, match="No space left") as raised:
        uploads.append_chunk(
            upload_file,
            offset=5_000,
            source=io.BytesIO(second),
            max_bytes=10**9,
            expected_digest=hashlib.sha256(second).digest(),
        )
    assert raised.value.errno == errno.ENOSPC
    assert uploads.media_path(upload_file).read_bytes() == first


def test_bytes_left_past_the_offset_by_a_killed_writer_are_cut_before_the_chunk(upload_file):
    """A worker killed mid-chunk (SIGKILL, out of memory) leaves bytes past the upload's
    offset; the next PATCH from that offset, shorter than what was left, must not keep them."""
    first, stale, retry = os.urandom(5_000), os.urandom(3 * PIECE), os.urandom(PIECE + 11)
    uploads.media_path(upload_file).write_bytes(first + stale)
    result = uploads.append_chunk(
        upload_file,
        offset=5_000,
        source=io.BytesIO(retry),
        max_bytes=10**9,
        expected_digest=hashlib.sha256(retry).digest(),
    )
    assert result == uploads.AppendResult(len(retry), True)
    assert uploads.media_path(upload_file).read_bytes() == first + retry


def test_a_wrong_checksum_cuts_the_file_back(upload_file):
    first, second = os.urandom(7_000), os.urandom(3 * PIECE + 5)
    uploads.append_chunk(upload_file, offset=0, source=io.BytesIO(first), max_bytes=10**9, expected_digest=None)
    result = uploads.append_chunk(
        upload_file,
        offset=7_000,
        source=io.BytesIO(second),
        max_bytes=10**9,
        expected_digest=hashlib.sha256(second[:-1] + b"\0").digest(),
    )
    assert result == uploads.AppendResult(0, False)
    assert uploads.media_path(upload_file).read_bytes() == first


def test_a_body_longer_than_allowed_is_refused_and_leaves_nothing(upload_file):
    body = os.urandom(2 * PIECE)
    with pytest.raises(RuleViolation) as refused:
        uploads.append_chunk(
            upload_file, offset=0, source=io.BytesIO(body), max_bytes=2 * PIECE - 1, expected_digest=None
        )
    assert status_for(refused.value.code) == 413
    assert uploads.media_path(upload_file).stat().st_size == 0


def test_memory_stays_at_a_few_pieces_whatever_the_chunk(upload_file, monkeypatch):
    """The pieces are the only buffers: PIECES_IN_FLIGHT maps of one piece each."""
    import mmap as mmap_module

    sizes = []
    real = mmap_module.mmap

    def counting_mmap(fileno, length, *args, **kwargs):
        sizes.append(length)
        return real(fileno, length, *args, **kwargs)

    monkeypatch.setattr(uploads.mmap, "mmap", counting_mmap)
    body = os.urandom(40 * PIECE + 3)
    uploads.append_chunk(
        upload_file, offset=0, source=io.BytesIO(body), max_bytes=10**9, expected_digest=hashlib.sha256(body).digest()
    )
    assert sizes == [PIECE] * uploads.PIECES_IN_FLIGHT
    assert uploads.media_path(upload_file).read_bytes() == body


@pytest.mark.parametrize(
    "value, message",
    [
        ("6000", "IMAGING_UPLOAD_PIECE_BYTES=6000 must be a multiple of 4096"),
        ("2048", "IMAGING_UPLOAD_PIECE_BYTES=2048 is below the minimum 4096"),
    ],
)
def test_a_piece_size_that_direct_io_cannot_write_is_refused_at_start(value, message, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[2],
        env=env | {"IMAGING_UPLOAD_PIECE_BYTES": value, "MPI_VAR_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and message in result.stderr
