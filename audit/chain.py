"""Recording and verifying the audit trail.

Each event's hash is an HMAC-SHA256, under a key the database never holds
(``audit.keys``), of the previous hash and the event's canonical form, so
whoever holds the database cannot edit an event and recompute the later links; signed
checkpoints of the head kept outside the database (``audit.checkpoints``) make
deleting the newest events, or rewriting the table wholesale, visible too.

``record_event`` is called by every service inside the service's own
``transaction.atomic`` block, so the change and its audit event commit together or
not at all. The chain is extended under a lock so concurrent writers never fork it:
an advisory lock on PostgreSQL (transaction-scoped when taken in a transaction;
session-scoped, released right after the chaining's own COMMIT, when taken after a
commit: a connection pooler in transaction mode would break it); on SQLite the write
transaction itself (``BEGIN IMMEDIATE``) already serialises writers, and each event is
chained in its own transaction.

Chained after the commit (PostgreSQL, issue #17). Chaining inside the writer's
transaction holds the lock from the head's read to the COMMIT (its WAL flush included),
so writers queued for that span and audited writes levelled off. Instead the event is
written *pending* in the writer's transaction (no lock: ``sequence`` and ``hash`` NULL,
``prev_hash`` a MAC of its content under the chain key) and, once that transaction has
committed, chained: under the lock, every committed pending event is given its sequence
and hash in one UPDATE, by id, and committed. One holder chains the events of every
writer that committed meanwhile, so the lock's cost is paid per batch, not per write.

After its commit a writer never waits for the lock (``_seal_after_commit``): it takes it
only if an event waits and nobody holds it (``pg_try_advisory_lock``), else leaves its
events to the holder, who looks again after releasing the lock. The holder's chaining
is three round trips, and its COMMIT does not wait for the WAL flush (the events
themselves were flushed with their writers' commits): a crash of the server can undo
only the newest chainings, never an event, and their events are pending again for the
next chaining. A chaining that reaches a checkpoint, and a checkpoint of the head, wait
for the flush, so a checkpoint never anchors what a crash could undo. Measured in
``benchmarks/audit_throughput.py``. So:

- an event commits with its change or not at all (a rolled-back transaction leaves no
  row), and is never lost: should a process die between its commit and the chaining,
  the next chaining (any writer's, ``verify_chain``, the periodic checkpoint task)
  chains it;
- events are chained in an order consistent with their transactions: a transaction
  that could see another's change started after that one committed, so its events
  have higher ids and are chained after;
- only the application's events are chained: a pending row whose MAC fails is left out
  and ``verify_chain`` names it; the database's trigger lets through exactly the one
  UPDATE that fills a pending event's chain fields, content unchanged (audit 0004).

A caller that needs the event's sequence inside its transaction passes ``sealed=True``
(the chain lock is then held to its commit, as before).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit import checkpoints as checkpoint_store
from audit.actions import AuditAction
from audit.checkpoints import Checkpoint
from audit.context import current as current_context
from audit.keys import ChainMac, Keyring, chain_macs, keyring
from audit.models import AUDIT_TABLE, AuditEvent

GENESIS_HASH = "0" * 64
# Any fixed 64-bit number: the key of the advisory lock that guards the chain head.
_CHAIN_LOCK_KEY = 7_240_113_001

logger = logging.getLogger(__name__)


class AuditError(RuntimeError):
    pass


# The canonical form: orjson with sorted keys (compact, UTF-8), every time as
# "YYYY-MM-DDTHH:MM:SS.ffffffZ" in UTC. Verification rebuilds it from raw column text,
# which PostgreSQL can produce directly (see _PG_VERIFY_SQL), so a million events verify
# without building a datetime or an IP address object per row.
_CANONICAL_OPTIONS = orjson.OPT_SORT_KEYS


def _canonical(value: dict) -> bytes:
    return orjson.dumps(value, option=_CANONICAL_OPTIONS)


def _utc_text(value: dt.datetime | str) -> str:
    if isinstance(value, str):  # already canonical: the verification SQL builds the text
        return value
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    # Naive values come from SQLite, where Django stores UTC.
    return value.isoformat(timespec="microseconds") + "Z"


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if timezone.is_naive(value):
            raise AuditError(f"naive datetime {value!r} in an audit payload: use UTC-aware datetimes")
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "pk"):
        return value.pk
    raise TypeError(f"cannot put {type(value).__name__} into an audit payload")


def to_jsonable(value: Any) -> Any:
    """Normalise a payload (dates, decimals, model instances) to plain JSON values."""
    return json.loads(json.dumps(value, default=_json_default))


def canonical_payload(
    *,
    sequence: int,
    occurred_at: dt.datetime | str,
    actor_id: int | None,
    actor_username: str,
    action: int,
    object_type: str,
    object_id: str,
    trial_id: int | None,
    site_id: int | None,
    subject_id: int | None,
    changes: Any,
    reason: str,
    request_id: str,
    client_address: str | None,
) -> bytes:
    """The exact bytes that are hashed: sorted keys, no whitespace, UTF-8. Recording and
    verifying both build them here, so the two can never disagree on the form."""
    return _canonical(
        {
            "sequence": sequence,
            "occurred_at": _utc_text(occurred_at),
            "actor_id": actor_id,
            "actor_username": actor_username,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "trial_id": trial_id,
            "site_id": site_id,
            "subject_id": subject_id,
            "changes": changes,
            "reason": reason,
            "request_id": request_id,
            "client_address": client_address,
        }
    )


def chain_hash(prev_hash: str, payload: bytes, *, key: bytes | None = None) -> str:
    """HMAC-SHA256 under ``key`` of the previous hash and the payload; without a key, the
    plain SHA-256 of events recorded before the chain was keyed."""
    message = prev_hash.encode("ascii") + payload
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, list]:
    """``{field: [old, new]}`` for the fields whose value changed (all of them on create)."""
    before = before or {}
    changes = {}
    for key in sorted(set(before) | set(after)):
        old, new = to_jsonable(before.get(key)), to_jsonable(after.get(key))
        if old != new:
            changes[key] = [old, new]
    return changes


# The chain lock, the head and the pending events in one round trip, sent without
# parameters (psycopg's simple query protocol). Under READ COMMITTED each statement of the
# query takes its own snapshot, so the head and the pending events are read after the lock
# is granted and see what the previous holder committed.
_PG_EVENT_TEXT_COLUMNS = """sequence,
       to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       actor_id, actor_username, action, object_type, object_id, trial_id, site_id, subject_id,
       changes::text, reason, request_id, host(client_address), prev_hash, hash, key_id"""
_PG_HEAD_AND_PENDING_SQL = f"""
SELECT sequence, hash FROM {AUDIT_TABLE} WHERE sequence IS NOT NULL ORDER BY sequence DESC LIMIT 1;
SELECT id, {_PG_EVENT_TEXT_COLUMNS} FROM {AUDIT_TABLE} WHERE hash IS NULL ORDER BY id"""  # noqa: S608 - this module's constants, no input reaches the SQL
_PG_LOCK_AND_HEAD_SQL = f"""SELECT pg_advisory_xact_lock({_CHAIN_LOCK_KEY});
{_PG_HEAD_AND_PENDING_SQL}
"""
_PG_PENDING_SQL = f"SELECT id, {_PG_EVENT_TEXT_COLUMNS} FROM {AUDIT_TABLE} WHERE hash IS NULL ORDER BY id"  # noqa: S608 - as above

# While an event waits to be chained its ``prev_hash`` holds this MAC of its content (its
# canonical form with sequence 0) under the key named by its ``key_id``: the sequencer
# chains only events the application wrote, never a row slipped into the table by whoever
# holds the database, and verification names such a row.
_PENDING_LABEL = b"pending audit event\n"


def _pending_mac(mac: ChainMac, payload: bytes) -> str:
    return mac.hexdigest(_PENDING_LABEL + payload)


_PG_WAITING_SQL = f"SELECT id FROM {AUDIT_TABLE} WHERE hash IS NULL ORDER BY id LIMIT 100"  # noqa: S608 - as above

# The chaining after a commit (issue #17) never waits for the lock. A writer first asks
# for it only if an event waits and only if it is free (``pg_try_advisory_lock``: held by
# the session, so across the chaining's own transaction): one cheap statement, which is
# all a writer that finds the lock taken pays. The holder then reads the head and the
# pending events (``_PG_HEAD_AND_PENDING_SQL``: statements that start after the lock was
# granted, READ COMMITTED).
_PG_TRY_HOLD_SQL = (
    f"SELECT pg_try_advisory_lock({_CHAIN_LOCK_KEY}) WHERE EXISTS (SELECT 1 FROM {AUDIT_TABLE} WHERE hash IS NULL)"  # noqa: S608 - this module's constants, no input reaches the SQL
)
# Then the holder chains them in a transaction of its own, releases the lock only after that
# transaction's COMMIT, and then (a statement that starts after the release) looks for
# events that committed meanwhile: their writers found the lock taken and left them to
# this holder. The chaining's row count is checked before the COMMIT, in the same query:
# a count other than expected fails the cast, which aborts the transaction.
_PG_RELEASE_AND_LOOK_SQL = f"SELECT pg_advisory_unlock({_CHAIN_LOCK_KEY}); {_PG_WAITING_SQL}"
_PG_CHAIN_AND_RELEASE_SQL = (
    "BEGIN; {durability}WITH chained AS ({update} RETURNING e.id) "  # noqa: S608 - this module's constants; count: an int
    "SELECT CASE WHEN count(*) = {count} THEN 0 "
    "ELSE ('chaining {count} pending audit events updated ' || count(*))::int END FROM chained; "
    "COMMIT; " + _PG_RELEASE_AND_LOOK_SQL
)
_PG_ABANDON_SQL = f"ROLLBACK; SELECT pg_advisory_unlock({_CHAIN_LOCK_KEY})"


def _lock_and_read(cursor) -> tuple[tuple[int, str], list[tuple]]:
    """PostgreSQL: take the chain lock (held to the end of the transaction); return the
    next event's (sequence, previous hash) and the pending events visible now, by id."""
    cursor.execute(_PG_LOCK_AND_HEAD_SQL)
    if not cursor.cursor.nextset():
        raise AuditError("the chain head query returned no head result")
    head = cursor.fetchone()
    if not cursor.cursor.nextset():
        raise AuditError("the chain head query returned no pending result")
    pending = cursor.fetchall()
    return ((head[0] + 1, head[1]) if head else (1, GENESIS_HASH)), pending


def _lock_chain_head() -> tuple[int, str]:
    """SQLite: its write transaction already holds the database; the next event's
    (sequence, previous hash)."""
    head = AuditEvent.objects.exclude(sequence=None).order_by("-sequence").values_list("sequence", "hash").first()
    return (int(head[0] or 0) + 1, str(head[1])) if head else (1, GENESIS_HASH)


def _row_payload(row: Sequence[Any], *, sequence: int) -> bytes:
    """The canonical form of an event read with ``_PG_EVENT_TEXT_COLUMNS`` (after its id)."""
    changes = row[11]
    return canonical_payload(
        sequence=sequence,
        occurred_at=row[2],
        actor_id=row[3],
        actor_username=row[4],
        action=row[5],
        object_type=row[6],
        object_id=row[7],
        trial_id=row[8],
        site_id=row[9],
        subject_id=row[10],
        changes=orjson.loads(changes) if isinstance(changes, str) else changes,
        reason=row[12],
        request_id=row[13],
        client_address=None if row[14] is None else str(row[14]),
    )


def _forged(row: Sequence[Any], macs: Mapping[str, ChainMac]) -> bool:
    """Whether a pending event's MAC fails: not written by the application, or altered."""
    mac = macs.get(row[17] or "")
    return mac is None or not hmac.compare_digest(_pending_mac(mac, _row_payload(row, sequence=0)), row[15] or "")


_SEAL_SQL = (
    f"UPDATE {AUDIT_TABLE} AS e SET sequence = v.sequence, prev_hash = v.prev_hash, hash = v.hash, key_id = v.key_id "  # noqa: S608 - this module's constants
    "FROM (VALUES {values}) AS v(id, sequence, prev_hash, hash, key_id) WHERE e.id = v.id AND e.hash IS NULL"
)


def _links(head: tuple[int, str], pending: Sequence[tuple], ring: Keyring) -> tuple[list[Any], list[tuple[int, str]]]:
    """The chain fields of ``pending`` (by id) on top of ``head``: the flat
    ``(id, sequence, prev_hash, hash, key_id)`` values of each event chained, and the
    (sequence, hash) of each event that is due a checkpoint.

    A pending event whose MAC fails is left out (and stays pending, which
    ``verify_chain`` reports)."""
    sequence, prev_hash = head
    macs = chain_macs(ring)
    current = macs[ring.current_id]
    values: list[Any] = []
    checkpoints: list[tuple[int, str]] = []
    every = settings.AUDIT_CHECKPOINT_EVERY_EVENTS
    for row in pending:
        if _forged(row, macs):
            _forged_ids.add(row[0])
            logger.error("audit event id %s waits to be chained but its pending MAC fails: left out", row[0])
            continue
        digest = current.hexdigest(prev_hash.encode("ascii") + _row_payload(row, sequence=sequence))
        values += [row[0], sequence, prev_hash, digest, ring.current_id]
        if sequence % every == 0:
            checkpoints.append((sequence, digest))
        sequence, prev_hash = sequence + 1, digest
    return values, checkpoints


def _update_sql(count: int) -> str:
    return _SEAL_SQL.format(values=", ".join(["(%s::bigint, %s::bigint, %s, %s, %s)"] * count))


def _seal(cursor, head: tuple[int, str], pending: Sequence[tuple], ring: Keyring) -> tuple[int, str]:
    """Chain ``pending`` (by id) on top of ``head`` under the held lock, in the caller's
    transaction; the new head."""
    if not pending:
        return head
    values, checkpoints = _links(head, pending, ring)
    count = len(values) // 5
    if not count:
        return head
    cursor.execute(_update_sql(count), values)
    if cursor.rowcount != count:
        raise AuditError(f"chaining {count} pending audit events updated {cursor.rowcount}")
    for at, digest in checkpoints:
        transaction.on_commit(functools.partial(_checkpoint_after_commit, at, digest))
    return head[0] + count, values[-2]


def seal_pending() -> int:
    """Chain every committed pending event (PostgreSQL), under the chain lock, in a
    transaction of its own (or the caller's); the number chained. Called after the commit
    of events, by ``verify_chain`` and by the periodic checkpoint task (a sweep, should a
    process die between its commit and its chaining)."""
    if connection.vendor != "postgresql":
        return 0
    ring = keyring()
    with transaction.atomic(), connection.cursor() as cursor:
        head, pending = _lock_and_read(cursor)
        after = _seal(cursor, head, pending, ring)
    return after[0] - head[0]


# Pending rows whose MAC failed (seen by this process): they are never chained, so the
# check for events left waiting disregards them.
_forged_ids: set[int] = set()
_MAX_CHAINING_ROUNDS = 50


def _try_hold_and_read(cursor) -> tuple[bool, tuple[int, str], list[tuple]]:
    """PostgreSQL, autocommit: take the chain lock if an event waits and nobody holds it;
    whether it was taken and, if it was, the next event's (sequence, previous hash) and
    the pending events, by id. Never a wait."""
    cursor.execute(_PG_TRY_HOLD_SQL)
    taken = cursor.fetchone()
    if taken is None or not taken[0]:
        return False, (0, GENESIS_HASH), []  # nothing waits, or another process holds the lock
    cursor.execute(_PG_HEAD_AND_PENDING_SQL)
    head = cursor.fetchone()
    if not cursor.cursor.nextset():
        raise AuditError("the chain head query returned no pending result")
    return True, ((head[0] + 1, head[1]) if head else (1, GENESIS_HASH)), cursor.fetchall()


def _chain_round() -> tuple[int, bool]:
    """One round of the chaining after a commit: if this process gets the lock, chain every
    committed pending event, commit, release, and look again. The number chained and
    whether an event (committed while the lock was held) still waits."""
    with connection.cursor() as cursor:
        try:
            held, head, pending = _try_hold_and_read(cursor)
            if not held:
                return 0, False  # the holder looks after this commit once it releases the lock
            values, checkpoints = _links(head, pending, keyring())
            count = len(values) // 5
            if count:
                durability = "" if checkpoints else "SET LOCAL synchronous_commit TO off; "
                cursor.execute(
                    _PG_CHAIN_AND_RELEASE_SQL.format(durability=durability, update=_update_sql(count), count=count),
                    values,
                )
            else:
                cursor.execute(_PG_RELEASE_AND_LOOK_SQL)
            while cursor.cursor.nextset():
                pass  # to the last result: the events that wait now
            waiting = cursor.fetchall()
        except BaseException:
            _abandon(cursor)
            raise
    for at, digest in checkpoints:
        _checkpoint_after_commit(at, digest)
    return count, any(row[0] not in _forged_ids for row in waiting)


def _abandon(cursor) -> None:
    """Roll back the chaining's transaction, if one is open, and release the lock; should
    that fail, close the connection, which releases it too."""
    try:
        cursor.execute(_PG_ABANDON_SQL)
    except Exception:
        logger.exception("releasing the audit chain lock failed: closing the connection")
        connection.close()


def _seal_after_commit() -> None:
    """Chain this transaction's events (and whatever else waits) unless another process
    holds the chain lock: then that process chains them, so writers never queue.

    A holder may have read the pending events before this transaction committed, so every
    holder looks again after releasing the lock and chains again if an event waits. This
    writer committed before it found the lock taken, and the holder released it after
    that: the holder's look, or a later holder's, sees this commit. A writer that finds
    nothing waiting (another holder chained its events) takes no lock. One statement for
    a writer that finds the lock taken; three round trips for the holder (``_chain_round``)."""
    # The change and its event are committed: a failing chaining must not turn them into
    # an error for the caller. The event stays pending (never lost); the next writer's
    # chaining, verify_chain or the periodic checkpoint task chains it.
    try:
        if connection.in_atomic_block or not connection.get_autocommit():
            seal_pending()  # a transaction is open: the blocking lock, held to its end
            return
        for _ in range(_MAX_CHAINING_ROUNDS):
            _, again = _chain_round()
            if not again:
                return
        logger.warning("audit events still wait to be chained after %s rounds", _MAX_CHAINING_ROUNDS)
    except Exception:
        logger.exception("chaining pending audit events after a commit failed; they stay pending")


def _chain_after_commit() -> bool:
    """Whether this event is appended pending and chained after its transaction commits
    (PostgreSQL), rather than chained inside it under the lock (SQLite; ``sealed=True``;
    ``AUDIT_CHAIN_AFTER_COMMIT = False``). Inside a test case's transaction, which never
    commits, it is chained inside it, as Django treats ``durable`` blocks there."""
    if connection.vendor != "postgresql" or not getattr(settings, "AUDIT_CHAIN_AFTER_COMMIT", True):
        return False
    return not (connection.atomic_blocks and getattr(connection.atomic_blocks[0], "_from_testcase", False))


_insert_sql: str | None = None


def _insert(event: AuditEvent) -> None:
    """INSERT the event; on PostgreSQL one statement with the values prepared as the ORM
    prepares them, without its per-call compilation."""
    global _insert_sql
    if connection.vendor != "postgresql":
        event.save(force_insert=True)
        return
    fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
    if _insert_sql is None:
        columns = ", ".join(connection.ops.quote_name(f.attname if f.column is None else f.column) for f in fields)
        _insert_sql = f"INSERT INTO {AUDIT_TABLE} ({columns}) VALUES ({', '.join(['%s'] * len(fields))}) RETURNING id"  # noqa: S608 - the model's own column names
    values = [f.get_db_prep_save(getattr(event, f.attname), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql, values)
        event.pk = cursor.fetchone()[0]
    event._state.adding = False
    event._state.db = connection.alias


def record_event(
    *,
    actor,
    action: AuditAction,
    object_type: str,
    object_id: Any = "",
    trial_id: int | None = None,
    site_id: int | None = None,
    subject_id: int | None = None,
    changes: Mapping[str, Any] | None = None,
    reason: str = "",
    occurred_at: dt.datetime | None = None,
    sealed: bool = False,
) -> AuditEvent:
    """Append one event to the chain. Must run inside the caller's transaction.

    On PostgreSQL the event is written pending and chained right after the caller's
    commit (its ``sequence`` and ``hash`` are None on the returned instance); with
    ``sealed=True`` it is chained now, under the chain lock held to the caller's commit,
    for a caller that needs its sequence in the same transaction."""
    if not connection.in_atomic_block:
        raise AuditError("record_event must be called inside transaction.atomic, with the change it records")
    action = AuditAction(action)
    ctx = current_context()
    actor_id = getattr(actor, "pk", None)
    actor_username = getattr(actor, "get_username", lambda: "")() if actor is not None else ""
    occurred_at = (occurred_at or timezone.now()).astimezone(dt.UTC)
    payload_changes = to_jsonable(dict(changes or {}))

    ring = keyring()
    fields = dict(
        occurred_at=occurred_at,
        actor_id=actor_id,
        actor_username=actor_username,
        action=int(action),
        object_type=object_type,
        object_id=str(object_id),
        trial_id=trial_id,
        site_id=site_id,
        subject_id=subject_id,
        changes=payload_changes,
        reason=reason,
        request_id=ctx.request_id,
        client_address=ctx.client_address,
    )
    if not sealed and _chain_after_commit():
        mac = _pending_mac(chain_macs(ring)[ring.current_id], canonical_payload(sequence=0, **fields))
        event = AuditEvent(sequence=None, prev_hash=mac, hash=None, key_id=ring.current_id, **fields)
        _insert(event)
        transaction.on_commit(_seal_after_commit)
        return event

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # lock held until the caller's transaction ends
            head, pending = _lock_and_read(cursor)
            sequence, prev_hash = _seal(cursor, head, pending, ring)  # committed events first
    else:
        sequence, prev_hash = _lock_chain_head()
    digest = chain_hash(prev_hash, canonical_payload(sequence=sequence, **fields), key=ring.current)
    event = AuditEvent(sequence=sequence, prev_hash=prev_hash, hash=digest, key_id=ring.current_id, **fields)
    _insert(event)
    if sequence % settings.AUDIT_CHECKPOINT_EVERY_EVENTS == 0:
        # After the commit: a checkpoint must only ever anchor an event that exists.
        transaction.on_commit(lambda: _checkpoint_after_commit(sequence, digest))
    return event


# --------------------------------------------------------------------------- change observers
#
# The one inversion of the layers, kept to one small, explicit hook. A service of a lower
# app (trials) that changes a record's content says so with ``record_change``; a rule of
# an upper app that must react in the same transaction (compliance.signatures: a signed
# subject visit whose content changed loses its signatures, 21 CFR 11.70) registers
# itself with ``register_change_observer`` from its AppConfig.ready. The lower app never
# imports the upper one; the observers run in the order registered, in the caller's
# transaction, and whatever they raise rolls the change back with them.

_change_observers: list[Callable[..., object]] = []


def register_change_observer(observer: Callable[..., object]) -> None:
    """Have ``observer(obj, *, actor, reason)`` called by every ``record_change``. Once per
    observer (registering it again changes nothing); call it from an AppConfig.ready."""
    if observer not in _change_observers:
        _change_observers.append(observer)


def record_change(obj, *, actor, reason: str) -> None:
    """Tell the observers that ``obj``'s content changed in the current transaction (the
    service has written the change and its audit event), with the change's reason."""
    if not connection.in_atomic_block:
        raise AuditError("record_change must be called inside transaction.atomic, with the change it reports")
    for observer in _change_observers:
        observer(obj, actor=actor, reason=reason)


# A record whose stored content is unchanged can still stop being what a signature vouched
# for: a scan re-filed to another subject or time point keeps its bytes and results, but
# they now describe someone, or some time, else. ``record_context_change`` tells the
# observers registered with ``register_context_observer`` (compliance: every signature on
# the record is invalidated, with the reason), in the caller's transaction.
_context_observers: list[Callable[..., object]] = []


def register_context_observer(observer: Callable[..., object]) -> None:
    """Have ``observer(obj, *, actor, reason)`` called by every ``record_context_change``."""
    if observer not in _context_observers:
        _context_observers.append(observer)


def record_context_change(obj, *, actor, reason: str) -> None:
    """Tell the observers that ``obj`` now belongs to another subject or time point (its
    content unchanged), inside the transaction that made that change."""
    if not connection.in_atomic_block:
        raise AuditError("record_context_change must be called inside transaction.atomic, with the change")
    for observer in _context_observers:
        observer(obj, actor=actor, reason=reason)


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    events_checked: int
    head_sequence: int | None
    head_hash: str
    first_broken_sequence: int | None = None
    problem: str = ""
    checkpoints_checked: int = 0  # checkpointed events found in the chain with their hash
    legacy_unkeyed_through: int | None = None  # events #1..N recorded before the chain was keyed

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "head_sequence": self.head_sequence,
            "head_hash": self.head_hash,
            "first_broken_sequence": self.first_broken_sequence,
            "problem": self.problem,
            "checkpoints_checked": self.checkpoints_checked,
            "legacy_unkeyed_through": self.legacy_unkeyed_through,
        }


_VERIFY_COLUMNS = (
    "sequence",
    "occurred_at",
    "actor_id",
    "actor_username",
    "action",
    "object_type",
    "object_id",
    "trial_id",
    "site_id",
    "subject_id",
    "changes",
    "reason",
    "request_id",
    "client_address",
    "prev_hash",
    "hash",
    "key_id",
)
_NO_CHECKPOINT = -1


def verify_rows(
    rows: Iterable[tuple],
    *,
    ring: Keyring | None = None,
    checkpoints: Sequence[Checkpoint] = (),
    checkpoint_problems: Sequence[str] = (),
) -> ChainVerification:
    """Walk rows (columns as in ``_VERIFY_COLUMNS``, by sequence) and find the first broken link.

    Every keyed event's hash must be the HMAC under its key; unkeyed (pre-key) events may
    only form a prefix, which a checkpoint must anchor. Each checkpoint (by sequence) must
    find its event in the chain with its hash; one beyond the chain's end means the newest
    events were deleted. A store line that is not a valid signed checkpoint fails the walk."""
    ring = ring or keyring()
    macs = chain_macs(ring)
    sha256 = hashlib.sha256
    loads = orjson.loads
    expected_prev = GENESIS_HASH
    expected_sequence = 1
    checked = matched = 0
    last_sequence = legacy_through = None
    keyed_seen = False
    pending = iter(checkpoints)
    checkpoint = next(pending, None)
    next_checkpoint = checkpoint.sequence if checkpoint else _NO_CHECKPOINT

    def broken(sequence: int | None, problem: str) -> ChainVerification:
        return ChainVerification(
            False, checked, last_sequence, expected_prev, sequence, problem, matched, legacy_through
        )

    for row in rows:
        (
            sequence,
            occurred_at,
            actor_id,
            actor_username,
            action,
            object_type,
            object_id,
            trial_id,
            site_id,
            subject_id,
            changes,
            reason,
            request_id,
            client_address,
            prev_hash,
            stored_hash,
            key_id,
        ) = row
        if sequence != expected_sequence:
            return broken(sequence, f"event #{sequence} follows #{expected_sequence - 1}: events are missing")
        if prev_hash != expected_prev:
            return broken(sequence, f"event #{sequence} does not point at the hash of the event before it")
        message = prev_hash.encode("ascii") + canonical_payload(
            sequence=sequence,
            occurred_at=occurred_at,
            actor_id=actor_id,
            actor_username=actor_username,
            action=action,
            object_type=object_type,
            object_id=object_id,
            trial_id=trial_id,
            site_id=site_id,
            subject_id=subject_id,
            changes=loads(changes) if isinstance(changes, str) else changes,
            reason=reason,
            request_id=request_id,
            client_address=None if client_address is None else str(client_address),
        )
        if key_id:
            mac = macs.get(key_id)
            if mac is None:
                return broken(
                    sequence,
                    f"event #{sequence} is keyed with key id {key_id}, which is neither "
                    "AUDIT_HMAC_KEY nor in AUDIT_HMAC_RETIRED_KEYS",
                )
            digest = mac.hexdigest(message)
            keyed_seen = True
        else:
            if keyed_seen:
                return broken(
                    sequence,
                    f"event #{sequence} is unkeyed after keyed events: only the events "
                    "recorded before the chain was keyed may be unkeyed (rewritten without the key)",
                )
            digest = sha256(message).hexdigest()
            legacy_through = sequence
        if digest != stored_hash:
            return broken(sequence, f"event #{sequence} was altered: its content no longer matches its hash")
        while checkpoint is not None and sequence == next_checkpoint:
            if checkpoint.hash != stored_hash:
                return broken(
                    sequence,
                    f"event #{sequence} is not the event that checkpoint {checkpoint.source} "
                    f"(signed {checkpoint.written_at}) recorded: the chain was rewritten",
                )
            matched += 1
            checkpoint = next(pending, None)
            next_checkpoint = checkpoint.sequence if checkpoint else _NO_CHECKPOINT
        expected_prev = stored_hash
        expected_sequence = sequence + 1
        last_sequence = sequence
        checked += 1
    if checkpoint is not None:
        return broken(
            checkpoint.sequence,
            f"the chain ends at event #{last_sequence or 0} but checkpoint "
            f"{checkpoint.source} (signed {checkpoint.written_at}) records event "
            f"#{checkpoint.sequence}: the newest events were deleted (truncated)",
        )
    if legacy_through is not None and not (checkpoints and checkpoints[-1].sequence >= legacy_through):
        return broken(
            legacy_through,
            f"events #1-#{legacy_through} were recorded before the chain was keyed and "
            "no checkpoint anchors them yet: run `manage.py audit_checkpoint`",
        )
    if checkpoint_problems:
        return broken(None, checkpoint_problems[0])
    return ChainVerification(True, checked, last_sequence, expected_prev, None, "", matched, legacy_through)


def _fetch_in_chunks(cursor, chunk_size: int):
    while True:
        rows = cursor.fetchmany(chunk_size)
        if not rows:
            return
        yield from rows


# PostgreSQL hands back the canonical text of each column, so the walk skips psycopg's
# conversions (timestamptz, jsonb, inet), which cost more than the hashing.
_PG_VERIFY_SQL = f"""
SELECT {_PG_EVENT_TEXT_COLUMNS}
FROM {AUDIT_TABLE} WHERE sequence IS NOT NULL ORDER BY sequence
"""  # noqa: S608 - AUDIT_TABLE is this app's constant, no input reaches the SQL
# SQLite keeps Django's UTC text ("YYYY-MM-DD HH:MM:SS[.ffffff]", the fraction left out
# when it is zero): turned into the canonical form in SQL, no datetime parsed per row.
_SQLITE_VERIFY_SQL = f"""
SELECT sequence,
       replace(CASE WHEN length(occurred_at) = 19 THEN occurred_at || '.000000' ELSE occurred_at END, ' ', 'T') || 'Z',
       actor_id, actor_username, action, object_type, object_id, trial_id, site_id, subject_id,
       changes, reason, request_id, client_address, prev_hash, hash, key_id
FROM {AUDIT_TABLE} ORDER BY sequence
"""  # noqa: S608 - AUDIT_TABLE is this app's constant, no input reaches the SQL


def checkpoint_dir() -> Path:
    return Path(settings.AUDIT_CHECKPOINT_DIR)


def read_checkpoints() -> tuple[list[Checkpoint], list[str]]:
    """The valid signed checkpoints (by sequence) and a problem for each line that is not one."""
    return checkpoint_store.read(checkpoint_dir(), keyring())


def verify_chain(*, chunk_size: int = 20_000) -> ChainVerification:
    """Recompute every link from the first event; name the first broken one; check that the
    chain holds every signed checkpoint.

    Reads raw rows rather than model instances: the ORM's per-row conversion costs
    more than the hashing itself. On PostgreSQL a server-side cursor keeps memory flat.
    """
    ring = keyring()
    # Checkpoints first: each names a committed event, so the chain read after it holds it.
    checkpoints, problems = checkpoint_store.read(checkpoint_dir(), ring)
    if connection.vendor == "postgresql":
        seal_pending()  # the committed events that wait to be chained join the chain first
        with transaction.atomic():
            connection.ensure_connection()
            with connection.connection.cursor(name="verify_audit_chain") as cursor:
                cursor.itersize = chunk_size
                cursor.execute(_PG_VERIFY_SQL)
                result = verify_rows(cursor, ring=ring, checkpoints=checkpoints, checkpoint_problems=problems)
            return _check_pending(result, ring) if result.ok else result
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(_SQLITE_VERIFY_SQL)
        return verify_rows(
            _fetch_in_chunks(cursor, chunk_size), ring=ring, checkpoints=checkpoints, checkpoint_problems=problems
        )


def _check_pending(result: ChainVerification, ring: Keyring) -> ChainVerification:
    """The events still pending after the chaining (committed since) must carry a valid
    pending MAC: one that does not was not written by the application (or was altered)."""
    macs = chain_macs(ring)
    with connection.cursor() as cursor:
        cursor.execute(_PG_PENDING_SQL)
        for row in cursor.fetchall():
            if _forged(row, macs):
                return ChainVerification(
                    False,
                    result.events_checked,
                    result.head_sequence,
                    result.head_hash,
                    None,
                    f"audit event id {row[0]} waits to be chained but its content does not match its "
                    "pending MAC: it was not written by the application, or was altered",
                    result.checkpoints_checked,
                    result.legacy_unkeyed_through,
                )
    return result


def head() -> tuple[int | None, str]:
    row = AuditEvent.objects.exclude(sequence=None).order_by("-sequence").values_list("sequence", "hash").first()
    return (row[0], str(row[1])) if row else (None, GENESIS_HASH)


def write_checkpoint(*, sequence: int | None = None, hash: str | None = None) -> dict | None:
    """Sign the chain head (or the given committed event) and append it to the checkpoint
    store; ``None`` when the chain is empty.

    Refuses (``AuditError``) when the chain no longer holds the latest checkpointed event
    with its hash: a truncated or rewritten chain is never anchored as if it were whole."""
    ring = keyring()
    directory = checkpoint_dir()
    existing, _ = checkpoint_store.read(directory, ring)  # a line that is not validly signed anchors nothing
    if existing:
        last = existing[-1]
        stored = AuditEvent.objects.filter(sequence=last.sequence).values_list("hash", flat=True).first()
        if stored != last.hash:
            what = "is missing (truncated)" if stored is None else "has another hash (rewritten)"
            raise AuditError(
                f"checkpoint refused: event #{last.sequence}, recorded by checkpoint {last.source}, "
                f"{what}; run `manage.py verify_audit`"
            )
    if sequence is None:
        seal_pending()  # the head includes every committed event (and this sweeps any left pending)
        sequence, hash = head()
        if sequence is None:
            return None
        if connection.vendor == "postgresql":
            _wait_for_wal_flush()  # the head's chaining may not be on disk yet: anchor it once it is
    if hash is None:
        raise AuditError(f"checkpoint refused: event #{sequence} given without its hash")
    return checkpoint_store.append(directory, sequence=sequence, hash=hash, ring=ring)


_PG_WAL_SQL = "SELECT pg_current_wal_insert_lsn()::text, setting::int FROM pg_settings WHERE name = 'wal_writer_delay'"
_PG_FLUSHED_SQL = "SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn"


def _wait_for_wal_flush() -> bool:
    """Wait until what this session has seen is on disk: whether the flush was seen.

    A chaining after a commit does not wait for its WAL flush (``_chain_round``), so a
    crash could undo it, and a checkpoint must only anchor what a crash cannot undo. The
    WAL writer flushes such a commit within three times ``wal_writer_delay``
    (PostgreSQL's documented bound for asynchronous commits): wait until the WAL written
    so far is flushed, or until that bound has passed."""
    with connection.cursor() as cursor:
        cursor.execute(_PG_WAL_SQL)
        lsn, delay_ms = cursor.fetchone()
        deadline = time.monotonic() + 3 * delay_ms / 1000 + 0.05
        while True:
            cursor.execute(_PG_FLUSHED_SQL, [lsn])
            if cursor.fetchone()[0]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _checkpoint_after_commit(sequence: int, digest: str) -> None:
    # The change and its event are committed: a failing checkpoint must not turn them
    # into an error for the caller. It is logged; the scheduled checkpoint will follow.
    try:
        write_checkpoint(sequence=sequence, hash=digest)
    except Exception:
        logger.exception("audit checkpoint after event #%s failed", sequence)
