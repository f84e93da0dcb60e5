"""Signed checkpoints of the audit chain's head, kept outside the database.

Whoever holds the database can delete the newest events or rewrite the table; a
checkpoint, signed with the chain key (which the database does not hold) and appended
to a store the database cannot reach, lets verification notice both: the chain must
still contain every checkpointed event, with the checkpointed hash.

The store is a folder (``AUDIT_CHECKPOINT_DIR``) of JSON-lines files, one per UTC day,
only ever opened with ``O_APPEND``. In production it is an append-only mount (a WORM or
object-lock bucket, a ``chattr +a`` folder on another host); each line is also logged
on the ``compliance.audit.checkpoint`` logger, so syslog can ship it off the host.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

from audit.keys import Keyring

# The logger's name is what operators route to syslog (README, docker-compose.yml): it
# keeps the name it had before the audit trail left compliance.
logger = logging.getLogger("compliance.audit.checkpoint")

VERSION = 1
_FIELDS = {"v", "sequence", "hash", "count", "written_at", "key_id", "signature"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Checkpoint:
    sequence: int
    hash: str
    count: int
    written_at: str
    key_id: str
    source: str  # "file:line", to name it in a verification problem

    def as_dict(self) -> dict:
        return {
            "sequence": self.sequence,
            "hash": self.hash,
            "count": self.count,
            "written_at": self.written_at,
            "key_id": self.key_id,
            "source": self.source,
        }


def _signature(body: dict, key: bytes) -> str:
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return hmac.new(key, orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()


def append(directory: Path, *, sequence: int, hash: str, ring: Keyring) -> dict:
    """Sign (sequence, hash) with the current key and append it as one line; returns the line's body."""
    now = dt.datetime.now(dt.UTC)
    body = {
        "v": VERSION,
        "sequence": sequence,
        "hash": hash,
        "count": sequence,
        "written_at": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "key_id": ring.current_id,
    }
    body["signature"] = _signature(body, ring.current)
    line = orjson.dumps(body, option=orjson.OPT_SORT_KEYS) + b"\n"
    directory.mkdir(parents=True, exist_ok=True)
    # One write() of a short line to an O_APPEND file: concurrent writers never interleave.
    fd = os.open(directory / f"checkpoints-{now:%Y-%m-%d}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    logger.info("audit checkpoint %s", line.decode("ascii").rstrip())
    return body


def files(directory: Path) -> list[Path]:
    return sorted(directory.glob("checkpoints-*.jsonl")) if directory.is_dir() else []


def _parse(raw: bytes, source: str, ring: Keyring) -> Checkpoint | str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return f"checkpoint {source} is not JSON"
    if not isinstance(body, dict) or set(body) != _FIELDS or body["v"] != VERSION:
        return f"checkpoint {source} does not have the checkpoint fields"
    sequence, digest, count = body["sequence"], body["hash"], body["count"]
    if (
        not isinstance(sequence, int)
        or isinstance(sequence, bool)
        or sequence < 1
        or count != sequence
        or not isinstance(digest, str)
        or not _HEX64.fullmatch(digest)
        or not isinstance(body["key_id"], str)
        or not isinstance(body["signature"], str)
        or not isinstance(body["written_at"], str)
    ):
        return f"checkpoint {source} has a malformed field"
    key = ring.keys.get(body["key_id"])
    if key is None:
        return (
            f"checkpoint {source} is signed with key id {body['key_id']}, which is neither AUDIT_HMAC_KEY "
            f"nor in AUDIT_HMAC_RETIRED_KEYS"
        )
    if not hmac.compare_digest(_signature(body, key), body["signature"]):
        return f"checkpoint {source} has a bad signature: it was not written with the chain key (forged or altered)"
    return Checkpoint(sequence, digest, count, body["written_at"], body["key_id"], source)


def read(directory: Path, ring: Keyring) -> tuple[list[Checkpoint], list[str]]:
    """Every checkpoint in the store, by sequence, and a problem for each line that is not a
    valid signed checkpoint (such a line is never trusted)."""
    checkpoints: list[Checkpoint] = []
    problems: list[str] = []
    for path in files(directory):
        for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
            parsed = _parse(raw, f"{path.name}:{number}", ring)
            if isinstance(parsed, str):
                problems.append(parsed)
            else:
                checkpoints.append(parsed)
    checkpoints.sort(key=lambda c: c.sequence)
    return checkpoints, problems
