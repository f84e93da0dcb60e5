"""The audit chain is keyed (HMAC under a key the database does not hold) and its head is
anchored by signed checkpoints outside the database (issue #12, item 10)."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import orjson
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader

from audit import checkpoints
from audit.actions import AuditAction
from audit.chain import (
    GENESIS_HASH,
    AuditError,
    canonical_payload,
    chain_hash,
    read_checkpoints,
    record_event,
    verify_chain,
    write_checkpoint,
)
from audit.keys import ChainMac, key_id
from audit.models import AuditEvent
from audit.tasks import audit_checkpoint
from tests.audit_triggers import tamper
from tests.compliance.test_deploy_check import ROOT, _manage

pytestmark = pytest.mark.django_db

KEY_A = "first-audit-chain-key-0123456789-abcdefghijkl"
KEY_B = "second-audit-chain-key-0123456789-mnopqrstuvw"


@pytest.fixture(autouse=True)
def _keys(settings):
    settings.AUDIT_HMAC_KEY = KEY_A
    settings.AUDIT_HMAC_RETIRED_KEYS = []


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="x" * 16)


def _record(actor, n=1):
    for i in range(n):
        with transaction.atomic():
            record_event(
                actor=actor,
                action=AuditAction.SUBJECT_UPDATED,
                object_type="subject",
                object_id=i,
                site_id=1,
                changes={"status": ["screening", "enrolled"]},
                reason="eligibility confirmed",
            )


def _payload(event: AuditEvent, **override) -> bytes:
    fields = dict(
        sequence=event.sequence,
        occurred_at=event.occurred_at,
        actor_id=event.actor_id,
        actor_username=event.actor_username,
        action=event.action,
        object_type=event.object_type,
        object_id=event.object_id,
        trial_id=event.trial_id,
        site_id=event.site_id,
        subject_id=event.subject_id,
        changes=event.changes,
        reason=event.reason,
        request_id=event.request_id,
        client_address=event.client_address,
    )
    return canonical_payload(**{**fields, **override})


def _rewrite_from(sequence: int, *, reason: str, key: bytes | None, key_id_value="keep"):
    """Edit event ``sequence``'s reason and recompute every later link, as someone holding the
    database but not the chain key would: with plain SHA-256 or a key of their own."""
    prev = str(AuditEvent.objects.get(sequence=sequence - 1).hash) if sequence > 1 else GENESIS_HASH
    for event in AuditEvent.objects.filter(sequence__gte=sequence).order_by("sequence"):
        new_reason = reason if event.sequence == sequence else event.reason
        digest = chain_hash(prev, _payload(event, reason=new_reason), key=key)
        kid = event.key_id if key_id_value == "keep" else key_id_value
        tamper(
            "UPDATE compliance_auditevent SET reason = %s, prev_hash = %s, hash = %s, key_id = %s WHERE sequence = %s",
            [new_reason, prev, digest, kid, event.sequence],
        )
        prev = digest


def test_it_keys_each_event_with_an_hmac_under_the_configured_key(alice):
    _record(alice, 2)
    first, second = AuditEvent.objects.order_by("sequence")
    key = KEY_A.encode()
    assert first.key_id == second.key_id == key_id(key)
    message = first.hash.encode() + _payload(second)
    assert second.hash == hmac.new(key, message, hashlib.sha256).hexdigest()
    assert second.hash != hashlib.sha256(message).hexdigest()


@pytest.mark.parametrize("key", [b"k" * 32, b"k" * 64, b"k" * 200], ids=["short", "block", "long"])
def test_the_fast_mac_equals_hmac_sha256(key):
    message = b"0" * 64 + b'{"sequence":1}'
    assert ChainMac(key).hexdigest(message) == hmac.new(key, message, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "attack",
    [
        dict(key=None),  # recomputed with plain SHA-256, key ids left in place
        dict(key=b"the-attackers-own-key-of-32-bytes!!"),  # recomputed under a key of their own
        dict(key=None, key_id_value=None),  # recomputed and marked as recorded before keying
    ],
    ids=["sha256", "own-key", "marked-unkeyed"],
)
def test_it_refuses_an_old_event_edited_and_every_later_hash_recomputed_without_the_key(alice, attack):
    _record(alice, 6)
    _rewrite_from(3, reason="backdated", **attack)
    result = verify_chain()
    assert not result.ok and result.first_broken_sequence == 3 and result.events_checked == 2
    assert "altered" in result.problem or "unkeyed after keyed" in result.problem
    with pytest.raises(CommandError, match=r"broken at event #3"):
        call_command("verify_audit")


def test_it_refuses_the_whole_chain_rewritten_as_unkeyed_behind_a_checkpoint(alice):
    _record(alice, 4)
    write_checkpoint()
    _rewrite_from(1, reason="backdated", key=None, key_id_value=None)
    result = verify_chain()
    assert not result.ok and result.first_broken_sequence == 4 and "rewritten" in result.problem


def test_it_names_truncation_when_the_newest_events_are_deleted_behind_a_checkpoint(alice):
    _record(alice, 5)
    body = write_checkpoint()
    assert body["sequence"] == 5
    _record(alice, 2)
    tamper("DELETE FROM compliance_auditevent WHERE sequence >= %s", [4])
    result = verify_chain()
    assert not result.ok and result.first_broken_sequence == 5 and result.events_checked == 3
    assert "the chain ends at event #3" in result.problem and "truncated" in result.problem
    with pytest.raises(CommandError, match=r"broken at event #5: .*truncated"):
        call_command("verify_audit")
    # Nor is the truncated chain anchored by a new checkpoint as if it were whole.
    with pytest.raises(AuditError, match=r"event #5, recorded by checkpoint .* is missing \(truncated\)"):
        write_checkpoint()
    assert [c.sequence for c in read_checkpoints()[0]] == [5]


def test_it_refuses_a_forged_checkpoint_line(alice, settings):
    _record(alice, 3)
    write_checkpoint()
    (path,) = checkpoints.files(settings.AUDIT_CHECKPOINT_DIR)
    genuine = orjson.loads(path.read_bytes().splitlines()[0])
    # A checkpoint claiming more events, signed with a key that is not the chain key.
    forged = {**genuine, "sequence": 9, "count": 9, "hash": "f" * 64}
    unsigned = {k: v for k, v in forged.items() if k != "signature"}
    forged["signature"] = hmac.new(
        b"not-the-chain-key-but-32-bytes-long", orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS), hashlib.sha256
    ).hexdigest()
    with path.open("ab") as handle:
        handle.write(orjson.dumps(forged) + b"\n")

    valid, problems = read_checkpoints()
    assert [c.sequence for c in valid] == [3]  # never trusted as an anchor
    assert problems == [
        f"checkpoint {path.name}:2 has a bad signature: it was not written with the chain key (forged or altered)"
    ]
    result = verify_chain()
    assert not result.ok and result.events_checked == 3 and result.problem == problems[0]
    with pytest.raises(CommandError, match=r"broken in its checkpoints: .*bad signature"):
        call_command("verify_audit")
    # The writer still anchors the real head: the forged line does not stop checkpoints.
    assert write_checkpoint()["sequence"] == 3


def test_it_verifies_an_untouched_chain_against_its_checkpoints(alice, capsys):
    _record(alice, 5)
    write_checkpoint()
    _record(alice, 3)
    call_command("audit_checkpoint")
    result = verify_chain()
    assert result.ok and result.events_checked == 8 and result.checkpoints_checked == 2
    assert result.legacy_unkeyed_through is None
    call_command("verify_audit")
    out = capsys.readouterr().out
    assert "OK: 8 events verified" in out and "2 checkpoints matched" in out


def test_it_writes_a_checkpoint_every_n_events_after_commit(alice, settings, django_capture_on_commit_callbacks):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 3
    with django_capture_on_commit_callbacks(execute=True):
        _record(alice, 7)
    valid, problems = read_checkpoints()
    assert problems == [] and [(c.sequence, c.hash) for c in valid] == [
        (s, AuditEvent.objects.get(sequence=s).hash) for s in (3, 6)
    ]


def test_the_beat_task_checkpoints_the_head(alice, settings):
    assert settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]["task"] == "compliance.audit_checkpoint"
    assert audit_checkpoint() == "empty chain" and read_checkpoints() == ([], [])
    _record(alice, 2)
    assert audit_checkpoint() == "checkpoint of event #2"
    assert [c.sequence for c in read_checkpoints()[0]] == [2]


def test_it_verifies_events_keyed_before_a_rotation_with_the_retired_key(alice, settings):
    _record(alice, 3)
    write_checkpoint()
    settings.AUDIT_HMAC_KEY, settings.AUDIT_HMAC_RETIRED_KEYS = KEY_B, [KEY_A]
    _record(alice, 2)
    write_checkpoint()
    assert {e.key_id for e in AuditEvent.objects.all()} == {key_id(KEY_A.encode()), key_id(KEY_B.encode())}
    result = verify_chain()
    assert result.ok and result.events_checked == 5 and result.checkpoints_checked == 2

    settings.AUDIT_HMAC_RETIRED_KEYS = []  # the old key dropped: what it keyed can no longer be checked
    result = verify_chain()
    assert not result.ok and result.first_broken_sequence == 1
    assert "neither AUDIT_HMAC_KEY nor in AUDIT_HMAC_RETIRED_KEYS" in result.problem


def _unkeyed_events(actor, n):
    """Events as the chain recorded them before it was keyed: plain SHA-256, no key id."""
    prev = GENESIS_HASH
    for sequence in range(1, n + 1):
        event = AuditEvent(
            sequence=sequence,
            occurred_at=dt_utc(),
            actor=actor,
            actor_username="alice",
            action=int(AuditAction.SUBJECT_UPDATED),
            object_type="subject",
            object_id=str(sequence),
            changes={},
            reason="before keying",
            request_id="",
            client_address=None,
        )
        event.prev_hash, event.hash = prev, chain_hash(prev, _payload(event))
        event.save()
        prev = event.hash


def dt_utc():
    import datetime as dt

    return dt.datetime(2026, 1, 5, 9, 30, 0, 123456, tzinfo=dt.UTC)


def test_it_accepts_the_unkeyed_prefix_only_once_a_checkpoint_anchors_it(alice):
    _unkeyed_events(alice, 3)
    result = verify_chain()
    assert not result.ok and "events #1-#3 were recorded before the chain was keyed" in result.problem

    # The keying migration anchors the prefix with the first checkpoint.
    # It runs against the models as they were at that migration (AuditEvent was compliance's then).
    node = ("compliance", "0005_chain_audit_key_id")
    historical = MigrationLoader(connection).project_state(node).apps
    migration = importlib.import_module(f"{node[0]}.migrations.{node[1]}")
    migration.checkpoint_the_unkeyed_prefix(historical, SimpleNamespace(connection=connection))
    _record(alice, 2)
    result = verify_chain()
    assert result.ok and result.events_checked == 5 and result.legacy_unkeyed_through == 3

    # Marking the keyed events as unkeyed too (to recompute them without the key) is seen.
    _rewrite_from(4, reason="backdated", key=None, key_id_value=None)
    result = verify_chain()
    assert not result.ok and "no checkpoint anchors them" in result.problem


def test_the_audit_extract_carries_the_checkpoints(alice, built, auditor, trial, visit):
    from compliance.models import Export

    _record(alice, 2)
    write_checkpoint()
    _, content = built(auditor, Export.Kind.AUDIT_JSON, trial)
    body = json.loads(content)
    [checkpoint] = body["checkpoints"]
    assert checkpoint["hash"] == AuditEvent.objects.get(sequence=checkpoint["sequence"]).hash
    assert body["chain_verification"]["ok"] and body["chain_verification"]["checkpoints_checked"] == 1
    _, content = built(auditor, Export.Kind.AUDIT_CSV, trial)
    assert f"# checkpoint: sequence: {checkpoint['sequence']}; hash: {checkpoint['hash']};" in content.decode()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"AUDIT_HMAC_KEY": ""}, "AUDIT_HMAC_KEY must be set when MPI_ENV=production"),
        ({"AUDIT_HMAC_KEY": "too-short-a-key"}, "AUDIT_HMAC_KEY: an audit chain key must be at least 32 bytes"),
        ({"AUDIT_HMAC_RETIRED_KEYS": "short"}, "AUDIT_HMAC_RETIRED_KEYS: an audit chain key must be at least 32"),
        ({"AUDIT_CHECKPOINT_DIR": ""}, "AUDIT_CHECKPOINT_DIR must be set when MPI_ENV=production"),
    ],
    ids=["no-key", "short-key", "short-retired-key", "no-checkpoint-dir"],
)
def test_it_refuses_to_start_in_production_without_a_proper_chain_key(env, message):
    result = _manage("check", **env)
    assert result.returncode != 0 and message in result.stderr


def test_it_reads_the_production_key_from_a_file(tmp_path):
    key_file = tmp_path / "audit_key"
    key_file.write_text("a-production-audit-chain-key-from-a-secret-file\n")
    result = _manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.AUDIT_HMAC_KEY)",
        AUDIT_HMAC_KEY="",
        AUDIT_HMAC_KEY_FILE=str(key_file),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "a-production-audit-chain-key-from-a-secret-file"


def test_the_embedded_mode_generates_one_key_under_var(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"AUDIT_HMAC_KEY", "MPI_ENV", "DATABASE_URL"}}
    env["MPI_VAR_DIR"] = str(tmp_path)
    code = "import django; django.setup(); from django.conf import settings; print(settings.AUDIT_HMAC_KEY)"
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    key_file = tmp_path / "audit_hmac_key"
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.strip() == key_file.read_text().strip()
    assert len(key_file.read_text().strip()) >= 32 and key_file.stat().st_mode & 0o777 == 0o600
