"""A per-worker-process cache of loaded system matrices, bounded in bytes.

Loading a calibration (tens to hundreds of MB, decompressed and background
corrected) costs more than many reconstructions, and a worker sees the same few
system matrices over and over. The cache is an explicit object with an LRU policy and
a byte budget (``IMAGING_SYSTEM_MATRIX_CACHE_BYTES``); the only module state is the
one instance that :func:`worker_cache` creates lazily in each process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np


def nbytes_of(value: Any) -> int:
    """Bytes held by numpy arrays inside ``value`` (arrays, dataclasses, dicts, tuples)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes_of(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes_of(v) for v in value)
    if hasattr(value, "__dict__"):
        return sum(nbytes_of(v) for v in vars(value).values())
    return 0


class SystemMatrixCache:
    """LRU cache of loaded system matrices keyed by their SHA-256.

    An entry larger than the whole budget is loaded and returned but not kept.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get_or_load(self, key: str, loader: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key][0]
        self.misses += 1
        value = loader()  # outside the lock: loading is slow
        size = nbytes_of(value)
        with self._lock:
            if size > self.max_bytes or key in self._entries:
                return value
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_instance: SystemMatrixCache | None = None


def worker_cache() -> SystemMatrixCache:
    """This process's cache, created on first use (after a fork, in the child)."""
    global _instance
    if _instance is None:
        from django.conf import settings

        _instance = SystemMatrixCache(settings.IMAGING_SYSTEM_MATRIX_CACHE_BYTES)
    return _instance
