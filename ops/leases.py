"""Leases: how a running task keeps its claim on a row while it works.

A task that claims a row (a scan step, an export) stamps the row with its claim time;
``renewing`` runs beside the task, in a thread of its own, and calls ``renew`` every
``interval`` seconds (a quarter of the lease), because the task may sit in numerical
code for minutes between progress reports. A worker that dies stops renewing, and the
owner's sweep (Celery beat) queues the work again once the lease has run out, whatever
the broker's visibility timeout. ``renew`` is the owner's one conditional UPDATE; it
returns False once the claim is no longer this task's, which stops the renewals.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from django.db import connections

log = logging.getLogger(__name__)


@contextlib.contextmanager
def renewing(renew: Callable[[], bool], *, interval: float, name: str) -> Iterator[None]:
    """Call ``renew()`` every ``interval`` seconds while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.wait(interval):
                try:
                    if not renew():
                        log.warning("%s: the claim is no longer ours; renewals stop", name)
                        return
                except Exception:
                    log.warning("%s: renewing the claim failed", name, exc_info=True)
        finally:
            connections.close_all()  # this thread's own connections

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
