"""Audit events are chained after their transaction commits, in batches (PostgreSQL, issue #17).

Each test commits for real (``transaction=True``): inside a test case's transaction, which
never commits, events are chained inline instead."""

from __future__ import annotations

import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, connections, transaction

from audit import chain
from audit.actions import AuditAction
from audit.chain import record_event, seal_pending, verify_chain, write_checkpoint
from audit.models import AUDIT_TABLE, AuditEvent
from tests.services import require_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def writer(db):
    require_postgres()
    return get_user_model().objects.create_user("writer", password="x" * 16)


def _event(actor, object_id, **extra):
    return record_event(
        actor=actor,
        action=AuditAction.SUBJECT_UPDATED,
        object_type="subject",
        object_id=object_id,
        site_id=1,
        changes={"status": ["screening", "enrolled"], "weight_kg": [70.5, 71.0]},
        reason="eligibility confirmed",
        **extra,
    )


def _pending() -> int:
    return AuditEvent.objects.filter(hash=None).count()


def _sql(statement: str, params=None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_an_event_is_pending_in_its_transaction_and_chained_after_the_commit(writer):
    with transaction.atomic():
        event = _event(writer, 1)
        # The writer took no lock: its event waits, visible to its own transaction.
        assert event.sequence is None and event.hash is None
        assert AuditEvent.objects.get(pk=event.pk).sequence is None
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.sequence == 1 and stored.hash and stored.prev_hash == chain.GENESIS_HASH
    assert _pending() == 0 and verify_chain().ok


def test_a_rolled_back_transaction_leaves_no_event(writer):
    with transaction.atomic():
        _event(writer, 1)

    def refused_change():
        with transaction.atomic():
            _event(writer, 2)
            _event(writer, 3)
            raise RuntimeError("the change is refused")

    with pytest.raises(RuntimeError):
        refused_change()
    with transaction.atomic():
        _event(writer, 4)
    assert list(AuditEvent.objects.values_list("sequence", "object_id")) == [(1, "1"), (2, "4")]
    result = verify_chain()
    assert result.ok and result.events_checked == 2


def test_events_of_one_transaction_keep_their_order(writer):
    with transaction.atomic():
        for i in range(5):
            _event(writer, i)
    assert list(AuditEvent.objects.values_list("sequence", "object_id")) == [(i + 1, str(i)) for i in range(5)]


def test_a_sealed_event_has_its_sequence_at_once_after_the_pending_ones(writer):
    with transaction.atomic():
        _event(writer, "a")  # pending: chained after this transaction commits...
        sealed = _event(writer, "b", sealed=True)  # ...or by the first inline chaining, before b
        assert sealed.sequence == 2
    assert list(AuditEvent.objects.values_list("sequence", "object_id")) == [(1, "a"), (2, "b")]
    assert verify_chain().ok


def test_sixteen_concurrent_writers_leave_one_chain_with_every_event_exactly_once(writer):
    per_writer, writers = 20, 16
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            barrier.wait()
            for i in range(per_writer):
                with transaction.atomic():
                    # Two events per transaction; every fourth writer chains inline (sealed).
                    _event(writer, f"{index}-{i}-1")
                    _event(writer, f"{index}-{i}-2", sealed=index % 4 == 0 and i % 2 == 0)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = per_writer * writers * 2
    # Every writer chained after its own commit: nothing is left waiting.
    assert _pending() == 0
    assert AuditEvent.objects.count() == total
    assert list(AuditEvent.objects.values_list("sequence", flat=True)) == list(range(1, total + 1))
    # Within a transaction, its events are chained in the order written.
    rows = dict(AuditEvent.objects.values_list("object_id", "sequence"))
    assert len(rows) == total
    assert all(rows[f"{w}-{i}-1"] < rows[f"{w}-{i}-2"] for w in range(writers) for i in range(per_writer))
    result = verify_chain()
    assert result.ok and result.events_checked == total


def test_a_commit_that_finds_the_chain_lock_taken_is_chained_by_the_holder(writer, monkeypatch):
    # The holder read the pending events before this commit: it must look again after releasing.
    holder_read, go_on = threading.Event(), threading.Event()
    real_read = chain._try_hold_and_read

    def read_then_pause(cursor):
        out = real_read(cursor)
        if threading.current_thread().name == "holder":
            holder_read.set()
            go_on.wait(30)
        return out

    monkeypatch.setattr(chain, "_try_hold_and_read", read_then_pause)

    def holder() -> None:
        try:
            with transaction.atomic():
                _event(writer, "holder")
        finally:
            connections.close_all()

    thread = threading.Thread(target=holder, name="holder")
    thread.start()
    assert holder_read.wait(30)
    with transaction.atomic():
        _event(writer, "late")
    assert AuditEvent.objects.get(object_id="late").sequence is None  # it found the lock taken
    go_on.set()
    thread.join(30)
    assert list(AuditEvent.objects.values_list("sequence", "object_id")) == [(1, "holder"), (2, "late")]
    assert _pending() == 0


def test_an_event_left_pending_by_a_dead_process_is_chained_by_the_next_writer_or_the_sweep(writer, monkeypatch):
    monkeypatch.setattr(chain, "_seal_after_commit", lambda: None)  # the process died after its commit
    with transaction.atomic():
        _event(writer, "orphan")
    assert _pending() == 1  # committed, never lost, not yet chained
    monkeypatch.undo()
    with transaction.atomic():
        _event(writer, "next")
    assert list(AuditEvent.objects.values_list("sequence", "object_id")) == [(1, "orphan"), (2, "next")]

    monkeypatch.setattr(chain, "_seal_after_commit", lambda: None)
    with transaction.atomic():
        _event(writer, "orphan 2")
    body = write_checkpoint()  # the periodic checkpoint task chains what waits before signing the head
    assert body is not None and body["sequence"] == 3 and _pending() == 0


def test_a_row_slipped_into_the_table_is_never_chained_and_verification_names_it(writer):
    with transaction.atomic():
        _event(writer, 1)
    # Whoever holds the database appends a pending-looking row without the key.
    _sql(
        f"INSERT INTO {AUDIT_TABLE} (occurred_at, actor_username, action, object_type, object_id, changes, "  # noqa: S608
        "reason, request_id, prev_hash, key_id) "
        "VALUES (now(), 'mallory', 201, 'subject', '9', '{}'::jsonb, 'forged', '', %s, %s)",
        ["0" * 64, keyring_id()],
    )
    assert seal_pending() == 0 and _pending() == 1
    with transaction.atomic():
        _event(writer, 2)  # the writers go on; the forged row stays out of the chain
    assert list(AuditEvent.objects.exclude(sequence=None).values_list("object_id", flat=True)) == ["1", "2"]
    result = verify_chain()
    assert not result.ok and "not written by the application" in result.problem


def test_a_pending_events_content_cannot_be_changed_before_it_is_chained(writer, monkeypatch):
    monkeypatch.setattr(chain, "_seal_after_commit", lambda: None)
    with transaction.atomic():
        event = _event(writer, 1)
    # The trigger lets only the chaining through: content changes are refused...
    with pytest.raises(DatabaseError, match="append-only"):
        _sql(f"UPDATE {AUDIT_TABLE} SET reason = 'edited' WHERE id = %s", [event.pk])  # noqa: S608
    # ...even together with chain fields, and so is deleting the event.
    with pytest.raises(DatabaseError, match="append-only"):
        _sql(
            f"UPDATE {AUDIT_TABLE} SET reason = 'edited', sequence = 1, hash = %s WHERE id = %s",  # noqa: S608
            ["f" * 64, event.pk],
        )
    with pytest.raises(DatabaseError, match="append-only"):
        _sql(f"DELETE FROM {AUDIT_TABLE} WHERE id = %s", [event.pk])  # noqa: S608
    assert seal_pending() == 1
    # Once chained, no UPDATE at all: not even one that "chains" it again.
    with pytest.raises(DatabaseError, match="append-only"):
        _sql(f"UPDATE {AUDIT_TABLE} SET sequence = 7, hash = %s WHERE id = %s", ["e" * 64, event.pk])  # noqa: S608
    assert verify_chain().ok


def keyring_id() -> str:
    from audit.keys import keyring

    return keyring().current_id


# --------------------------------------------------------------------------- the chaining never waits (issue #17)


def _other_session():
    """A connection of its own (another process, as far as the server can tell)."""
    import psycopg

    params = connection.get_connection_params()
    return psycopg.connect(**params, autocommit=True)


def _lock_is_free() -> bool:
    with _other_session() as other:
        taken = other.execute("SELECT pg_try_advisory_lock(%s)", [chain._CHAIN_LOCK_KEY]).fetchone()[0]
        if taken:
            other.execute("SELECT pg_advisory_unlock(%s)", [chain._CHAIN_LOCK_KEY])
        return bool(taken)


def test_a_writer_never_waits_for_the_chain_lock_and_the_lock_is_left_free(writer):
    with _other_session() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [chain._CHAIN_LOCK_KEY])  # held, and never let go here
        began = time.monotonic()
        with transaction.atomic():
            _event(writer, "while held")
        took = time.monotonic() - began
        # It committed, found the lock taken and left its event to the holder, without waiting.
        assert took < 5 and _pending() == 1
    # The holder is gone (its session with it): the next writer chains both, in order.
    with transaction.atomic():
        _event(writer, "next")
    assert list(AuditEvent.objects.values_list("sequence", "object_id")) == [(1, "while held"), (2, "next")]
    assert _pending() == 0 and _lock_is_free() and verify_chain().ok


def test_a_writer_that_finds_nothing_waiting_takes_no_lock(writer):
    with transaction.atomic():
        _event(writer, 1)
    statements: list[str] = []

    def capture(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        chain._seal_after_commit()  # its event was chained already: one statement, the lock untouched
    assert len(statements) == 1 and _lock_is_free()
    assert list(AuditEvent.objects.values_list("sequence", flat=True)) == [1]


def test_a_failed_chaining_leaves_its_events_pending_and_the_lock_free(writer, monkeypatch, caplog):
    real_links = chain._links

    def one_too_many(head, pending, ring):
        values, checkpoints = real_links(head, pending, ring)
        # An event that does not exist: the UPDATE chains one row fewer than it was asked to.
        return values + [-1, head[0] + len(values) // 5, "0" * 64, "f" * 64, ring.current_id], checkpoints

    monkeypatch.setattr(chain, "_links", one_too_many)
    with transaction.atomic():
        event = _event(writer, "kept")  # the change commits: a failing chaining is not the caller's error
    assert AuditEvent.objects.get(pk=event.pk).sequence is None and _pending() == 1
    assert "chaining 2 pending audit events updated 1" in caplog.text  # checked before the COMMIT
    assert _lock_is_free()
    monkeypatch.undo()
    with transaction.atomic():
        _event(writer, "next")
    assert list(AuditEvent.objects.values_list("sequence", "object_id")) == [(1, "kept"), (2, "next")]
    assert verify_chain().ok


def test_a_chaining_waits_for_its_flush_only_when_it_reaches_a_checkpoint(writer, settings):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 2
    chainings: list[str] = []

    def capture(execute, sql, params, many, context):
        if "WITH chained AS" in sql:
            chainings.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        for i in (1, 2, 3):
            with transaction.atomic():
                _event(writer, i)
    assert ["synchronous_commit TO off" in sql for sql in chainings] == [True, False, True]
    checkpoints, problems = chain.read_checkpoints()
    assert problems == [] and [c.sequence for c in checkpoints] == [2]
    assert checkpoints[0].hash == AuditEvent.objects.get(sequence=2).hash
    assert verify_chain().ok


def test_a_checkpoint_anchors_only_a_flushed_head(writer, monkeypatch):
    with transaction.atomic():
        _event(writer, 1)  # chained without waiting for its flush
    waited: list[bool] = []
    real_wait = chain._wait_for_wal_flush
    monkeypatch.setattr(chain, "_wait_for_wal_flush", lambda: waited.append(True) or real_wait())
    began = time.monotonic()
    body = write_checkpoint()
    # Within PostgreSQL's bound for an asynchronous commit's flush (3 x wal_writer_delay, 200 ms by default).
    assert waited == [True] and time.monotonic() - began < 5
    assert body is not None and body["sequence"] == 1
    assert body["hash"] == AuditEvent.objects.get(sequence=1).hash


def test_writer_processes_leave_one_verified_chain_and_nothing_pending(writer):
    # Processes, not threads: each with its own connection, committing and chaining at once.
    import multiprocessing

    connections.close_all()
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_write_in_process, args=(n, 25)) for n in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0] * 8
    assert _pending() == 0 and AuditEvent.objects.count() == 200
    assert list(AuditEvent.objects.values_list("sequence", flat=True)) == list(range(1, 201))
    result = verify_chain()
    assert result.ok and result.events_checked == 200 and _lock_is_free()


def _write_in_process(index: int, count: int) -> None:
    connections.close_all()  # never the parent's connection
    try:
        for i in range(count):
            with transaction.atomic():
                _event(None, f"{index}-{i}")
    finally:
        connections.close_all()
