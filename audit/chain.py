"""Recording and verifying the audit trail.

Each event's hash is an HMAC-SHA256, under a key the database never holds
(``audit.keys``), of the previous hash and the event's canonical form, so
whoever holds the database cannot edit an event and recompute the later links; signed
checkpoints of the head kept outside the database (``audit.checkpoints``) make
deleting the newest events, or rewriting the table wholesale, visible too.

``record_event`` is called by every service inside the service's own
``transaction.atomic`` block, so the change and its audit event commit together or
not at all. The chain is extended under a lock so concurrent writers never fork it:
a transaction-scoped advisory lock on PostgreSQL; on SQLite the write transaction
itself (``BEGIN IMMEDIATE``) already serialises writers.

The lock is held from the head's read to the caller's COMMIT, so writers queue for
that span and throughput is its inverse: on PostgreSQL it is kept to two round trips
and the commit (the lock and the head's read in one query, the insert without the ORM's
per-call work), measured by ``benchmarks/audit_throughput.py``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import hmac
import json
import logging
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
from audit.keys import ChainMac, Keyring, keyring
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


# Two statements in one round trip, sent without parameters (psycopg's simple query
# protocol). Under READ COMMITTED each statement of the query takes its own snapshot, so
# the head is read after the lock is granted and sees the previous holder's committed event.
_PG_LOCK_AND_HEAD_SQL = f"""
SELECT pg_advisory_xact_lock({_CHAIN_LOCK_KEY});
SELECT sequence, hash FROM {AUDIT_TABLE} ORDER BY sequence DESC LIMIT 1
"""  # noqa: S608 - this module's constants, no input reaches the SQL


def _lock_chain_head() -> tuple[int, str]:
    """Take the chain lock (PostgreSQL; SQLite's write transaction already holds the
    database) and return the next event's (sequence, previous hash)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_PG_LOCK_AND_HEAD_SQL)
            if not cursor.cursor.nextset():
                raise AuditError("the chain head query returned no head result")
            head = cursor.fetchone()
    else:
        head = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    return (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)


_insert_sql: str | None = None


def _insert(event: AuditEvent) -> None:
    """INSERT the event; on PostgreSQL one statement with the values prepared as the ORM
    prepares them, without its per-call compilation (it runs while the lock is held)."""
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
) -> AuditEvent:
    """Append one event to the chain. Must run inside the caller's transaction."""
    if not connection.in_atomic_block:
        raise AuditError("record_event must be called inside transaction.atomic, with the change it records")
    action = AuditAction(action)
    ctx = current_context()
    actor_id = getattr(actor, "pk", None)
    actor_username = getattr(actor, "get_username", lambda: "")() if actor is not None else ""
    occurred_at = (occurred_at or timezone.now()).astimezone(dt.UTC)
    payload_changes = to_jsonable(dict(changes or {}))

    ring = keyring()
    sequence, prev_hash = _lock_chain_head()  # held until the caller's transaction ends
    fields = dict(
        sequence=sequence,
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
    digest = chain_hash(prev_hash, canonical_payload(**fields), key=ring.current)
    event = AuditEvent(prev_hash=prev_hash, hash=digest, key_id=ring.current_id, **fields)
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
    macs = {kid: ChainMac(key) for kid, key in ring.keys.items()}
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
SELECT sequence,
       to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       actor_id, actor_username, action, object_type, object_id, trial_id, site_id, subject_id,
       changes::text, reason, request_id, host(client_address), prev_hash, hash, key_id
FROM {AUDIT_TABLE} ORDER BY sequence
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
        with transaction.atomic():
            connection.ensure_connection()
            with connection.connection.cursor(name="verify_audit_chain") as cursor:
                cursor.itersize = chunk_size
                cursor.execute(_PG_VERIFY_SQL)
                return verify_rows(cursor, ring=ring, checkpoints=checkpoints, checkpoint_problems=problems)
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(_SQLITE_VERIFY_SQL)
        return verify_rows(
            _fetch_in_chunks(cursor, chunk_size), ring=ring, checkpoints=checkpoints, checkpoint_problems=problems
        )


def head() -> tuple[int | None, str]:
    row = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    return (row[0], row[1]) if row else (None, GENESIS_HASH)


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
        sequence, hash = head()
        if sequence is None:
            return None
    if hash is None:
        raise AuditError(f"checkpoint refused: event #{sequence} given without its hash")
    return checkpoint_store.append(directory, sequence=sequence, hash=hash, ring=ring)


def _checkpoint_after_commit(sequence: int, digest: str) -> None:
    # The change and its event are committed: a failing checkpoint must not turn them
    # into an error for the caller. It is logged; the scheduled checkpoint will follow.
    try:
        write_checkpoint(sequence=sequence, hash=digest)
    except Exception:
        logger.exception("audit checkpoint after event #%s failed", sequence)
