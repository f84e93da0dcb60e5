"""imaging.uploads.append_chunk on its own: chunks at any offset and of any length land
byte-exact, whatever sizes the source hands out, with O_DIRECT for the whole blocks and the
page cache for the ends, or with the page cache alone where the file system takes no direct
I/O; memory stays at one piece; every failure cuts the file back to where the chunk started."""

from __future__ import annotations

import base64
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


class Trickle(io.BytesIO):
    """A body that arrives in odd, short reads (as from a socket), recording what was asked."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self.step = step
        self.asked: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        assert size is not None and size > 0  # append_chunk always says how much
        self.asked.append(size)
        return super().read(min(size, self.step))


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


def append_all(relative: str, data: bytes, step: int | None = None) -> None:
    offset = 0
    for size in CHUNK_SIZES:
        chunk = data[offset : offset + size]
        result = uploads.append_chunk(
            relative,
            offset=offset,
            source=io.BytesIO(chunk) if step is None else Trickle(chunk, step),
            max_bytes=len(data) - offset,
            expected_digest=hashlib.sha256(chunk).digest(),
        )
        assert result == uploads.AppendResult(len(chunk), True)
        offset += size


@pytest.mark.parametrize("step", [None, 1000, 4093])
def test_chunks_at_any_offset_land_byte_exact_and_whole_blocks_go_direct(upload_file, monkeypatch, tmp_path, step):
    """``step``: the source hands out short reads of this size (as a socket does)."""
    if not direct_io_supported(tmp_path):
        pytest.skip(f"{tmp_path} takes no O_DIRECT (tmpfs before Linux 6.6); the fallback tests cover it")
    data = os.urandom(sum(CHUNK_SIZES))
    spy = DirectSpy(monkeypatch)
    append_all(upload_file, data, step)
    assert uploads.media_path(upload_file).read_bytes() == data
    # Each chunk sends at most its two partial end blocks through the page cache.
    assert spy.bytes["cached"] <= len(CHUNK_SIZES) * 2 * uploads.DIRECT_ALIGN
    assert spy.bytes["direct"] + spy.bytes["cached"] == len(data)
    assert spy.bytes["direct"] > 0.7 * len(data)


def test_without_o_direct_every_byte_goes_through_the_page_cache(upload_file, monkeypatch):
    monkeypatch.delattr(os, "O_DIRECT")  # as on a platform that has none
    data = os.urandom(sum(CHUNK_SIZES))
    append_all(upload_file, data, step=4093)
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


def test_a_body_that_fails_mid_chunk_cuts_the_file_back_and_raises(upload_file):
    """What config.request_body raises when the client hangs up: nothing of the chunk stays."""
    first, second = os.urandom(5_000), os.urandom(5 * PIECE)
    uploads.append_chunk(upload_file, offset=0, source=io.BytesIO(first), max_bytes=10**9, expected_digest=None)

    class HangsUp(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            if self.tell() >= 3 * PIECE:
                raise ConnectionResetError("the client is gone")
            return super().read(size)

    with pytest.raises(ConnectionResetError):
        uploads.append_chunk(upload_file, offset=5_000, source=HangsUp(second), max_bytes=10**9, expected_digest=None)
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


def test_memory_stays_at_one_piece_whatever_the_chunk(upload_file, monkeypatch):
    """One map of one piece is the only buffer, and no read asks for more than a piece."""
    import mmap as mmap_module

    sizes = []
    real = mmap_module.mmap

    def counting_mmap(fileno, length, *args, **kwargs):
        sizes.append(length)
        return real(fileno, length, *args, **kwargs)

    monkeypatch.setattr(uploads.mmap, "mmap", counting_mmap)
    body = os.urandom(40 * PIECE + 3)
    source = Trickle(body, step=PIECE)
    uploads.append_chunk(
        upload_file, offset=0, source=source, max_bytes=10**9, expected_digest=hashlib.sha256(body).digest()
    )
    assert sizes == [PIECE]
    assert max(source.asked) == PIECE and len(source.asked) >= 41
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


def test_a_chunk_that_ends_on_a_piece_edge_lands_whole(upload_file):
    """The body's end falls exactly after a full piece: the next read finds nothing to write."""
    body = os.urandom(2 * PIECE)
    result = uploads.append_chunk(
        upload_file,
        offset=0,
        source=io.BytesIO(body),
        max_bytes=2 * PIECE,
        expected_digest=hashlib.sha256(body).digest(),
    )
    assert result == uploads.AppendResult(2 * PIECE, True)
    assert uploads.media_path(upload_file).read_bytes() == body


def refuse_direct_open(monkeypatch, error: int) -> list[int]:
    """os.open refuses O_DIRECT with ``error``; returns the descriptors it opened."""
    real, opened = os.open, []

    def fake_open(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(error, os.strerror(error))
        fd = real(path, flags, *args)
        opened.append(fd)
        return fd

    monkeypatch.setattr(os, "open", fake_open)
    return opened


def test_a_file_system_without_direct_io_at_open_gets_every_byte_through_the_page_cache(upload_file, monkeypatch):
    refuse_direct_open(monkeypatch, errno.EINVAL)
    data = os.urandom(sum(CHUNK_SIZES))
    append_all(upload_file, data)
    assert uploads.media_path(upload_file).read_bytes() == data


def test_another_error_opening_for_direct_io_is_raised_and_nothing_left_open(upload_file, monkeypatch):
    opened = refuse_direct_open(monkeypatch, errno.EACCES)
    with pytest.raises(PermissionError):
        uploads.append_chunk(upload_file, offset=0, source=io.BytesIO(b"x"), max_bytes=1, expected_digest=None)
    assert len(opened) == 1
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(opened[0])  # closed again
    assert uploads.media_path(upload_file).stat().st_size == 0


def test_a_removed_upload_cannot_be_held_for_writing(upload_file):
    uploads.remove(upload_file)
    with pytest.raises(RuleViolation) as refused, uploads.exclusive(upload_file):
        pass
    assert refused.value.code == "upload_closed"


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, {}),
        ("", {}),
        ("subject MTI=, ,filename", {"subject": "12", "filename": ""}),
        ("hours MjQuNQ==,sha256 YWJj", {"hours": "24.5", "sha256": "abc"}),
    ],
)
def test_upload_metadata_is_parsed_pair_by_pair(header, expected):
    assert uploads.parse_metadata(header) == expected


@pytest.mark.parametrize("header", ["subject not*base64", "subject //79"])  # not base64; base64 of non-UTF-8 bytes
def test_upload_metadata_that_is_not_base64_of_text_is_refused(header):
    with pytest.raises(RuleViolation) as refused:
        uploads.parse_metadata(header)
    assert refused.value.code == "invalid_metadata" and status_for(refused.value.code) == 400
    assert "'subject'" in refused.value.message


def test_an_upload_checksum_is_the_32_byte_sha256_digest():
    digest = hashlib.sha256(b"chunk").digest()
    assert uploads.parse_checksum(None) is None
    assert uploads.parse_checksum("SHA256 " + base64.b64encode(digest).decode()) == digest


@pytest.mark.parametrize(
    "header, code",
    [
        ("md5 AAAA", "unsupported_checksum"),
        ("sha256 not*base64", "invalid_checksum"),
        ("sha256 YWJj", "invalid_checksum"),  # base64 of 3 bytes
    ],
)
def test_a_malformed_upload_checksum_is_refused(header, code):
    with pytest.raises(RuleViolation) as refused:
        uploads.parse_checksum(header)
    assert refused.value.code == code and status_for(refused.value.code) == 400
