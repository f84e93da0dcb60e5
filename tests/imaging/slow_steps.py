"""A test-only worker plugin: the steps named in the worker's environment sleep first, after
their task has claimed its row, so a fault test can kill the worker mid-step, stop the
broker while the step runs, or watch the hard time limit stop it. Never part of the
platform: a test's worker loads it from its command line (``celery worker --include
tests.imaging.slow_steps``, see ``Worker(slow=..., slow_validation=..., slow_export=...)``).

- ``SLOW_RECONSTRUCTION_SECONDS``: every reconstruction (``imaging.processing.reconstruct``);
- ``SLOW_VALIDATION_SECONDS``: every validation (``imaging.processing.inspect``, which it calls);
- ``SLOW_EXPORT_SECONDS``: every export build (``compliance.reports.build``).

Each prints its line (``... sleeping``) to the worker's log when it starts to sleep."""

from __future__ import annotations

import functools
import os
import sys
import time

from tests.imaging.worker import SLOW_EXPORT_SLEEPING, SLOW_RECONSTRUCTION_SLEEPING, SLOW_VALIDATION_SLEEPING


def _slowed(function, variable: str, line: str):
    @functools.wraps(function)
    def slow(*args, **kwargs):
        seconds = float(os.environ[variable])
        # The test waits for this line in the worker's log: the row is claimed and its task asleep.
        print(f"{line} {seconds:g} s", file=sys.stderr, flush=True)
        time.sleep(seconds)
        return function(*args, **kwargs)

    return slow


if "SLOW_RECONSTRUCTION_SECONDS" in os.environ:
    from imaging import processing

    processing.reconstruct = _slowed(
        processing.reconstruct, "SLOW_RECONSTRUCTION_SECONDS", SLOW_RECONSTRUCTION_SLEEPING
    )

if "SLOW_VALIDATION_SECONDS" in os.environ:
    from imaging import processing

    processing.inspect = _slowed(processing.inspect, "SLOW_VALIDATION_SECONDS", SLOW_VALIDATION_SLEEPING)

if "SLOW_EXPORT_SECONDS" in os.environ:
    from compliance import reports

    reports.build = _slowed(reports.build, "SLOW_EXPORT_SECONDS", SLOW_EXPORT_SLEEPING)
