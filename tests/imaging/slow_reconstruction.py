"""A test-only worker plugin: every reconstruction sleeps first, after its task has claimed
the scan, so a fault test can kill the worker mid-reconstruction (or watch the hard time
limit stop it). Never part of the platform: a test's worker loads it from its command line
(``celery worker --include tests.imaging.slow_reconstruction``, see ``Worker(slow=...)``),
and ``SLOW_RECONSTRUCTION_SECONDS`` in that worker's environment says how long."""

from __future__ import annotations

import os
import sys
import time

from imaging import processing
from tests.imaging.worker import SLOW_RECONSTRUCTION_SLEEPING

_reconstruct = processing.reconstruct


def _slow_reconstruct(*args, **kwargs):
    seconds = float(os.environ["SLOW_RECONSTRUCTION_SECONDS"])
    # The test waits for this line in the worker's log: the scan is claimed and its task asleep.
    print(f"{SLOW_RECONSTRUCTION_SLEEPING} {seconds:g} s", file=sys.stderr, flush=True)
    time.sleep(seconds)
    return _reconstruct(*args, **kwargs)


processing.reconstruct = _slow_reconstruct
