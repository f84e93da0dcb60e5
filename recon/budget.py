"""The default cap on frequency rows: from the memory available and the number of voxels.

A 3D calibration can hold 80,000 candidate (channel, frequency) rows of 6,859
voxels or more; reconstructing with all of them needs tens of GB and gains
little. When the plan sets no ``max_rows``, the rows with the highest SNR are
kept up to

    max_rows = min(by_memory, by_voxels)
    by_memory = budget_bytes // (16 · P)
        the float32 real-stacked matrix of M complex rows is 2M × P × 4 B =
        8·P·M bytes, and the pipeline's peak is held to twice that, so each
        row costs 16·P bytes of the budget;
    budget_bytes = ``memory_budget_bytes`` or MEMORY_FRACTION × available memory
        (``MemAvailable``, or the cgroup's limit minus its usage when lower);
    by_voxels = max(P // 4, SMALL_MATRIX_BYTES // (8 · P))
        the float64 row Gram matrix of 2M real rows (32·M² bytes) stays no
        larger than the float32 matrix (8·P·M bytes) while M ≤ P / 4, so
        solvers that factor or iterate on it stay within the same 2× bound;
        below SMALL_MATRIX_BYTES the whole problem is small and is not capped
        by voxels (small 2D grids keep all their rows, as before).

The budget is stated in every result (``selection["budget"]``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: Share of the available memory one reconstruction may plan to use.
MEMORY_FRACTION = 0.25
#: A float32 matrix below this size is never capped by the voxel rule.
SMALL_MATRIX_BYTES = 64 * 2**20
#: Used when the available memory cannot be read (not Linux).
FALLBACK_AVAILABLE_BYTES = 4 * 2**30


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory_bytes() -> tuple[int, str]:
    """(bytes, where from): the smaller of MemAvailable and the cgroup v2 headroom."""
    found: list[tuple[int, str]] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "MemAvailable"))
                    break
    except (OSError, ValueError, IndexError):
        pass
    limit = _read_int("/sys/fs/cgroup/memory.max")
    used = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        found.append((max(limit - used, 0), "cgroup memory.max - memory.current"))
    if not found:
        return FALLBACK_AVAILABLE_BYTES, "fallback (memory not readable)"
    return min(found)


@dataclass(frozen=True)
class RowBudget:
    """How many complex rows a reconstruction of ``num_voxels`` voxels may use, and why."""

    max_rows: int
    source: str  # "plan max_rows" or "default budget"
    num_voxels: int
    budget_bytes: int
    available_bytes: int
    available_source: str
    by_memory: int
    by_voxels: int

    @property
    def float32_matrix_bytes_at_cap(self) -> int:
        return 8 * self.num_voxels * self.max_rows

    def as_dict(self) -> dict:
        out = asdict(self)
        out["rule"] = "max_rows = min(budget_bytes // (16 P), max(P // 4, 64 MiB // (8 P)))"
        return out


def row_budget(
    num_voxels: int,
    max_rows: int | None = None,
    memory_budget_bytes: int | None = None,
    available: tuple[int, str] | None = None,
) -> RowBudget:
    """The row cap for ``num_voxels`` voxels (see the module docstring).

    max_rows : the plan's explicit cap, which wins when given;
    memory_budget_bytes : the plan's budget; None = MEMORY_FRACTION × available;
    available : (bytes, source) to use instead of reading the machine (tests).
    """
    p = int(num_voxels)
    if p < 1:
        raise ValueError(f"num_voxels must be >= 1, got {num_voxels!r}")
    avail, avail_source = available_memory_bytes() if available is None else available
    budget = int(memory_budget_bytes) if memory_budget_bytes is not None else int(MEMORY_FRACTION * avail)
    by_memory = max(1, budget // (16 * p))
    by_voxels = max(p // 4, SMALL_MATRIX_BYTES // (8 * p), 1)
    if max_rows is not None:
        cap, source = int(max_rows), "plan max_rows"
    else:
        cap, source = min(by_memory, by_voxels), "default budget"
    return RowBudget(cap, source, p, budget, int(avail), avail_source, by_memory, by_voxels)


__all__ = ["RowBudget", "row_budget", "available_memory_bytes", "MEMORY_FRACTION", "SMALL_MATRIX_BYTES"]
