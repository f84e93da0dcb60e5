"""``ops.leases.renewing``: renews every interval while the block runs, stops after the
block, stops early once the claim is not the task's, and survives a failing renewal."""

from __future__ import annotations

import threading
import time

from ops.leases import renewing


def test_it_renews_every_interval_and_stops_with_the_block():
    calls = []
    with renewing(lambda: calls.append(time.monotonic()) or True, interval=0.05, name="t"):
        time.sleep(0.4)
    after = len(calls)
    time.sleep(0.2)
    assert 3 <= after <= 9, after
    assert len(calls) == after  # nothing renews after the block


def test_it_stops_renewing_once_the_claim_is_not_ours():
    calls = []
    with renewing(lambda: calls.append(1) and False, interval=0.02, name="t"):
        time.sleep(0.3)
    assert len(calls) == 1


def test_a_failing_renewal_is_logged_and_retried(caplog):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database restarting")
        return True

    with renewing(flaky, interval=0.02, name="flaky-lease"):
        time.sleep(0.3)
    assert len(calls) >= 3
    assert "flaky-lease: renewing the claim failed" in caplog.text
    assert not [t for t in threading.enumerate() if t.name == "flaky-lease"]
