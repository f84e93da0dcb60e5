"""recon.budget.available_memory_bytes: the smaller of MemAvailable and the
cgroup v2 headroom, a fallback when neither can be read, and row_budget's
refusal of an empty grid."""

import io

import pytest

from recon import budget

MEMINFO = "MemTotal:       32000000 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\n"


def _fake_files(monkeypatch, files):
    """Serve ``files`` (path -> text, or an exception to raise) to recon.budget's open()."""

    def fake_open(path, *args, **kwargs):
        content = files.get(path, FileNotFoundError(2, "No such file", path))
        if isinstance(content, BaseException):
            raise content
        return io.StringIO(content)

    monkeypatch.setattr(budget, "open", fake_open, raising=False)


def test_it_takes_the_cgroup_headroom_when_it_is_smaller(monkeypatch):
    _fake_files(
        monkeypatch,
        {
            "/proc/meminfo": MEMINFO,
            "/sys/fs/cgroup/memory.max": "8000000000\n",
            "/sys/fs/cgroup/memory.current": "3000000000\n",
        },
    )
    assert budget.available_memory_bytes() == (5_000_000_000, "cgroup memory.max - memory.current")


def test_it_takes_memavailable_when_the_cgroup_has_no_limit(monkeypatch):
    _fake_files(
        monkeypatch,
        {"/proc/meminfo": MEMINFO, "/sys/fs/cgroup/memory.max": "max\n", "/sys/fs/cgroup/memory.current": "12\n"},
    )
    assert budget.available_memory_bytes() == (20_000_000 * 1024, "MemAvailable")


def test_a_cgroup_over_its_limit_has_no_headroom(monkeypatch):
    _fake_files(
        monkeypatch,
        {"/sys/fs/cgroup/memory.max": "100\n", "/sys/fs/cgroup/memory.current": "250\n"},
    )
    assert budget.available_memory_bytes() == (0, "cgroup memory.max - memory.current")


@pytest.mark.parametrize(
    "meminfo",
    ["MemTotal: 1 kB\n", "MemAvailable: lots kB\n", "MemAvailable:\n", PermissionError(13, "denied")],
)
def test_it_falls_back_when_memory_cannot_be_read(monkeypatch, meminfo):
    _fake_files(monkeypatch, {"/proc/meminfo": meminfo})
    assert budget.available_memory_bytes() == (budget.FALLBACK_AVAILABLE_BYTES, "fallback (memory not readable)")
    rb = budget.row_budget(1000)
    assert rb.available_bytes == budget.FALLBACK_AVAILABLE_BYTES
    assert rb.available_source == "fallback (memory not readable)"
    assert rb.budget_bytes == int(budget.MEMORY_FRACTION * budget.FALLBACK_AVAILABLE_BYTES)


@pytest.mark.parametrize("voxels", [0, -5])
def test_it_refuses_a_grid_without_voxels(voxels):
    with pytest.raises(ValueError, match=rf"num_voxels must be >= 1, got {voxels}"):
        budget.row_budget(voxels, available=(2**30, "test"))
