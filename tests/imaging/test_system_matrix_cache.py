"""The per-worker system-matrix cache: LRU, bounded in bytes, one instance per process."""

from __future__ import annotations

import numpy as np

from imaging import cache as cache_module
from imaging.cache import SystemMatrixCache


def _loader(nbytes, calls):
    def load():
        calls.append(nbytes)
        return {"system_matrix": np.zeros(nbytes, dtype=np.uint8)}

    return load


def test_it_loads_once_and_evicts_the_least_recently_used_beyond_its_budget():
    calls = []
    cache = SystemMatrixCache(max_bytes=250)
    a = cache.get_or_load("a", _loader(100, calls))
    assert cache.get_or_load("a", _loader(100, calls)) is a
    cache.get_or_load("b", _loader(100, calls))
    cache.get_or_load("a", _loader(100, calls))  # a is now the most recent
    cache.get_or_load("c", _loader(100, calls))  # over budget: b goes
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.bytes_used == 200
    assert calls == [100, 100, 100]
    assert (cache.hits, cache.misses) == (2, 3)


def test_it_returns_but_does_not_keep_an_entry_larger_than_the_budget():
    calls = []
    cache = SystemMatrixCache(max_bytes=50)
    value = cache.get_or_load("big", _loader(100, calls))
    assert value["system_matrix"].nbytes == 100
    assert len(cache) == 0 and cache.bytes_used == 0


def test_it_creates_one_instance_per_process_lazily(settings, monkeypatch):
    monkeypatch.setattr(cache_module, "_instance", None)
    settings.IMAGING_SYSTEM_MATRIX_CACHE_BYTES = 1234
    first = cache_module.worker_cache()
    assert first is cache_module.worker_cache()
    assert first.max_bytes == 1234
