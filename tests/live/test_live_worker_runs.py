"""Where live workers run: the embedded worker thread (ensure_worker) and the production
command (``manage.py live_worker``), each holding a lease on the session it works."""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from live import runner
from live import worker as live_worker
from live.models import LiveSession
from live.worker import FINISHED
from tests.live.conftest import events_of, publish


@pytest.fixture
def fake_engines(engines, monkeypatch):
    monkeypatch.setattr(live_worker, "build_engine", engines.factory)
    return engines


def test_live_worker_once_works_a_streaming_session_to_its_end(live, transport, fake_engines, settings):
    settings.LIVE_LEASE_RENEW_S = 60.0  # the heartbeat thread stays off the test's database
    publish(transport, live.session, 0, np.tile([80_000.0, 0.0, 0.0], (10, 1)), t0=time.time())
    transport.publish_control(live.session.pk, "end", {"scan": None})
    out = io.StringIO()
    call_command("live_worker", "--once", stdout=out)
    assert f"session #{live.session.pk} ended" in out.getvalue()
    assert [e["frame"] for e in events_of(transport, live.session, "metrics")] == list(range(10))
    assert LiveSession.objects.get(pk=live.session.pk).worker_id == FINISHED
    out = io.StringIO()
    call_command("live_worker", "--once", stdout=out)  # nothing left to claim
    assert "stopped after 0 session(s)" in out.getvalue()


def test_sigterm_stops_the_worker_cleanly_and_gives_the_session_back(live, transport, fake_engines, settings):
    settings.LIVE_LEASE_RENEW_S = 60.0
    publish(transport, live.session, 0, np.tile([80_000.0, 0.0, 0.0], (10, 1)), t0=time.time())
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        out = io.StringIO()
        call_command("live_worker", "--session", str(live.session.pk), stdout=out)
    finally:
        timer.cancel()
    assert f"session #{live.session.pk} released" in out.getvalue()
    session = LiveSession.objects.get(pk=live.session.pk)
    assert session.frames_processed == 10  # the block in hand was finished and checkpointed
    assert session.worker_id == "" and session.lease_until is None  # the next worker claims it at once
    assert runner.claim_session("next") == live.session.pk


def test_the_heartbeat_renews_the_lease(live, settings):
    settings.LIVE_LEASE_RENEW_S = 0.05
    runner.claim_session("A", session_id=live.session.pk)
    before = LiveSession.objects.get(pk=live.session.pk).lease_until
    assert runner.renew_lease(live.session.pk, "A")
    assert LiveSession.objects.get(pk=live.session.pk).lease_until > before
    assert not runner.renew_lease(live.session.pk, "B")


def test_open_sessions_are_not_claimed(live):
    LiveSession.objects.filter(pk=live.session.pk).update(status="open")
    assert runner.claim_session("A") is None


@pytest.mark.django_db(transaction=True)
def test_ensure_worker_runs_the_session_in_a_thread_once(live, transport, fake_engines):
    publish(transport, live.session, 0, np.tile([80_000.0, 0.0, 0.0], (10, 1)), t0=time.time())
    runner.ensure_worker(live.session.pk)
    thread = runner.worker_thread(live.session.pk)
    assert thread is not None
    runner.ensure_worker(live.session.pk)  # a second call while it runs starts nothing
    assert runner.worker_thread(live.session.pk) is thread
    publish(transport, live.session, 10, np.tile([80_000.0, 0.0, 0.0], (10, 1)), t0=time.time())
    transport.publish_control(live.session.pk, "end", {"scan": None})
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert [e["frame"] for e in events_of(transport, live.session, "metrics")] == list(range(20))
    assert events_of(transport, live.session)[-1]["type"] == "ended"
    assert LiveSession.objects.get(pk=live.session.pk).worker_id == FINISHED
    assert connection.connection is None or connection.is_usable()


def test_ensure_worker_is_a_no_op_on_redis(live, settings, monkeypatch):
    settings.LIVE_TRANSPORT = "redis"
    started = []
    monkeypatch.setattr(runner, "_start_thread", started.append)
    runner.ensure_worker(live.session.pk)
    assert started == []
