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


def test_each_queue_has_a_worker_of_its_own_in_compose():
    """No backlog hides another (issue #17): quantification never waits behind validations
    or reconstructions, because no compose worker serves two queues."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    served = []
    for service in services.values():
        words = str(service.get("command") or "").split()
        if "worker" in words and "--queues" in words:
            served.append(words[words.index("--queues") + 1].split(","))
    assert all(len(queues) == 1 for queues in served), served
    assert sorted(q for queues in served for q in queues) == sorted(declared_queues())
