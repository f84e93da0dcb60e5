"""Where live workers run, and their claim on a session.

A session is worked by one worker at a time: the worker holds a lease on its row
(``worker_id``, ``lease_until``), taken with a conditional UPDATE and renewed every
``LIVE_LEASE_RENEW_S`` seconds by a heartbeat thread (``LIVE_LEASE_S`` long). A worker
that dies stops renewing; once its lease has run out the next claim takes the session
over and resumes from ``frames_processed`` and ``engine_state`` with the transport's
unacknowledged frames (``live.worker``). ``worker_id = "finished"`` marks a session
whose stream the worker has ended: it is never claimed again.

- Embedded (``LIVE_TRANSPORT = "memory"``): ``ensure_worker(session_id)``, called by the
  ingest path after each frames block, starts the session's worker in a daemon thread of
  the web process, once per session (the in-memory transport lives in that process).
- Production: ``python manage.py live_worker`` processes, each working one session at a
  time (``serve``); add processes as scanners are added.

Preparation: the engine's calibration rows, operator and region functionals are cached on
disk (``recon.live.prepare``) as soon as a session is created, so that the build at the
stream's start only loads them. Embedded: ``ensure_prepared`` runs it in a daemon thread
when the session is created. Production: an idle ``live_worker`` prepares the open
sessions (created, not yet streaming) and the active calibrations (``prepare_waiting``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from live.models import LiveSession, LiveStatus
from live.worker import FINISHED, LiveWorker, prepare_calibration, prepare_engine

log = logging.getLogger(__name__)

_threads: dict[int, threading.Thread] = {}
_threads_lock = threading.Lock()


def new_worker_id(kind: str = "process") -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{kind}:{uuid.uuid4().hex[:8]}"


def _claimable(now: dt.datetime) -> Q:
    # Streaming sessions, and ended or aborted ones whose stream no worker has finished yet.
    return (
        Q(status__in=[LiveStatus.STREAMING, LiveStatus.ENDED, LiveStatus.ABORTED])
        & ~Q(worker_id=FINISHED)
        & (Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    )


def claim_session(worker_id: str, *, session_id: int | None = None) -> int | None:
    """Claim one session to work (its lease free or run out): its id, or None."""
    now = timezone.now()
    candidates = LiveSession.objects.filter(_claimable(now))
    if session_id is not None:
        candidates = candidates.filter(pk=session_id)
    for pk in candidates.order_by("created_at", "id").values_list("id", flat=True)[:20]:
        won = LiveSession.objects.filter(_claimable(now), pk=pk).update(
            worker_id=worker_id, lease_until=now + dt.timedelta(seconds=settings.LIVE_LEASE_S)
        )
        if won:
            return pk
    return None


def renew_lease(session_id: int, worker_id: str) -> bool:
    return bool(
        LiveSession.objects.filter(pk=session_id, worker_id=worker_id).update(
            lease_until=timezone.now() + dt.timedelta(seconds=settings.LIVE_LEASE_S)
        )
    )


def release_session(session_id: int, worker_id: str) -> None:
    """Give an unfinished session back at once (a clean shutdown): the next claim takes it."""
    LiveSession.objects.filter(pk=session_id, worker_id=worker_id).update(worker_id="", lease_until=None)


def run_claimed(
    session_id: int, worker_id: str, *, stop: threading.Event | None = None, worker_factory: Callable | None = None
) -> str | None:
    """Work a claimed session, renewing the lease in a heartbeat thread, until its stream
    ends (the final status), ``stop`` is set or the lease is lost (None)."""
    stop = stop or threading.Event()
    done = threading.Event()
    factory = worker_factory or LiveWorker
    worker = factory(session_id, worker_id=worker_id, stop_event=stop)

    def heartbeat() -> None:
        try:
            while not done.wait(settings.LIVE_LEASE_RENEW_S):
                if not renew_lease(session_id, worker_id):
                    if not done.is_set():
                        log.warning("live session #%s: lease of %s lost", session_id, worker_id)
                        stop.set()
                    return
        finally:
            connection.close()

    beat = threading.Thread(target=heartbeat, name=f"live-lease-{session_id}", daemon=True)
    beat.start()
    try:
        status = worker.run()
    finally:
        done.set()
        beat.join()
    if status is None and not worker.lease_lost:
        release_session(session_id, worker_id)
    return status


def ensure_worker(session_id: int) -> None:
    """Start the session's worker thread in this process (``LIVE_TRANSPORT = "memory"``;
    a no-op otherwise, where ``live_worker`` processes claim sessions). Idempotent: one
    thread per session; called inside a transaction, it starts once that commits."""
    if getattr(settings, "LIVE_TRANSPORT", "memory") != "memory":
        return
    transaction.on_commit(lambda: _start_thread(session_id))


def _start_thread(session_id: int) -> None:
    with _threads_lock:
        running = _threads.get(session_id)
        if running is not None and running.is_alive():
            return
        thread = threading.Thread(target=_thread_main, args=(session_id,), name=f"live-{session_id}", daemon=True)
        _threads[session_id] = thread
        thread.start()


def _thread_main(session_id: int) -> None:
    worker_id = new_worker_id("thread")
    try:
        if claim_session(worker_id, session_id=session_id) is not None:
            run_claimed(session_id, worker_id)
    except Exception:
        log.exception("live session #%s: the live worker thread failed", session_id)
    finally:
        connection.close()
        with _threads_lock:
            if _threads.get(session_id) is threading.current_thread():
                del _threads[session_id]


def worker_thread(session_id: int) -> threading.Thread | None:
    """The session's worker thread in this process, if one runs (tests join it)."""
    with _threads_lock:
        return _threads.get(session_id)


# --------------------------------------------------------------------------- preparation


def ensure_prepared(session_id: int) -> None:
    """Prepare the session's engine in a daemon thread of this process once the session is
    committed (``LIVE_TRANSPORT = "memory"``; a no-op otherwise, where idle ``live_worker``
    processes prepare open sessions). Preparing twice is harmless: a cache hit."""
    if getattr(settings, "LIVE_TRANSPORT", "memory") != "memory":
        return
    transaction.on_commit(lambda: _start_prepare_thread(session_id))


def _start_prepare_thread(session_id: int) -> threading.Thread:
    thread = threading.Thread(target=_prepare_main, args=(session_id,), name=f"live-prepare-{session_id}", daemon=True)
    thread.start()
    return thread


def _prepare_main(session_id: int) -> None:
    try:
        prepare_engine(session_id)
    except Exception:  # a failed preparation only costs the worker its own build later
        log.exception("live session #%s: preparing the engine failed", session_id)
    finally:
        connection.close()


def prepare_waiting(done: set, *, limit: int = 5) -> int:
    """An idle worker's preparation: the engines of open sessions (created, no stream yet),
    then the calibration part of active system matrices, each once per process (``done``
    holds what this process prepared). Returns how many it prepared."""
    from imaging.models import SystemMatrix

    count = 0
    for pk in (
        LiveSession.objects.filter(status=LiveStatus.OPEN, system_matrix__isnull=False)
        .order_by("created_at", "id")
        .values_list("id", flat=True)[:limit]
    ):
        if ("session", pk) in done:
            continue
        done.add(("session", pk))
        _prepare_quietly(prepare_engine, pk, what=f"live session #{pk}")
        count += 1
    for matrix in SystemMatrix.objects.filter(active=True).order_by("-id")[:limit]:
        if ("matrix", matrix.pk, matrix.sha256) in done:
            continue
        done.add(("matrix", matrix.pk, matrix.sha256))
        _prepare_quietly(prepare_calibration, matrix, what=f"system matrix #{matrix.pk}")
        count += 1
    return count


def _prepare_quietly(work: Callable[[Any], object], arg: Any, *, what: str) -> None:
    try:
        work(arg)
    except Exception:  # an unusable calibration is the session's worker's to report
        log.exception("%s: not prepared for live monitoring", what)
