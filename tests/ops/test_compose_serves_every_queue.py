"""Readiness wants a worker with a fresh heartbeat for every declared queue
(``ops.health``), so the production shape must run a worker for each: a queue declared
but consumed by no compose service keeps ``/health/`` failing forever."""

from __future__ import annotations

from pathlib import Path

import yaml

from ops.health import declared_queues

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _consumed_queues() -> set[str]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    consumed: set[str] = set()
    for service in services.values():
        command = service.get("command") or ""
        words = command.split() if isinstance(command, str) else list(command)
        if "worker" in words and "--queues" in words:
            consumed |= set(words[words.index("--queues") + 1].split(","))
    return consumed


def test_every_declared_queue_has_a_worker_in_compose():
    assert _consumed_queues() == set(declared_queues())
