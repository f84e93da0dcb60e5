"""Disaster recovery (issue #17): a PostgreSQL backup (pg_dump, custom format) restored
into a new database (pg_restore) holds every row and the whole audit chain, which
verifies (`manage.py verify_audit`) against the signed checkpoints; the README's
"Backup and restore" section is this procedure. Needs PostgreSQL and its client tools."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection, transaction

from audit.actions import AuditAction
from audit.chain import record_event, write_checkpoint
from audit.models import AuditEvent
from tests.imaging.worker import database_url
from tests.services import require_executable, require_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def _admin_connect():
    import psycopg

    return psycopg.connect(urlunsplit(urlsplit(database_url())._replace(path="/postgres")), autocommit=True)


def _manage(*args: str, database: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"MPI_ENV", "CELERY_BROKER_URL"}} | {
        "DATABASE_URL": database,
        "AUDIT_HMAC_KEY": settings.AUDIT_HMAC_KEY,
        "AUDIT_CHECKPOINT_DIR": str(settings.AUDIT_CHECKPOINT_DIR),
        "MPI_VAR_DIR": str(settings.VAR_DIR),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_restored_backup_holds_every_row_and_a_verified_chain(coordinator_a, site_a, tmp_path):
    require_postgres()
    pg_dump = require_executable("pg_dump", package="postgresql-client")
    pg_restore = require_executable("pg_restore", package="postgresql-client")
    from tests import factories as f

    subjects = [f.SubjectFactory(site=site_a) for _ in range(3)]
    for subject in subjects:
        with transaction.atomic():
            record_event(
                actor=coordinator_a,
                action=AuditAction.SUBJECT_UPDATED,
                object_type="subject",
                object_id=subject.pk,
                site_id=site_a.pk,
                changes={"status": ["screening", "enrolled"]},
                reason="backup drill",
            )
    write_checkpoint()  # the backup is taken after a checkpoint, as the README says
    events = AuditEvent.objects.count()
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()

    source = database_url()
    dump = tmp_path / "mpi.dump"
    subprocess.run([pg_dump, "--format=custom", "--file", str(dump), source], check=True, timeout=300)

    restored_name = f"{connection.settings_dict['NAME']}_restore_{secrets.token_hex(4)}"
    restored = urlunsplit(urlsplit(source)._replace(path=f"/{restored_name}"))
    with _admin_connect() as admin:
        admin.execute(f'CREATE DATABASE "{restored_name}"')
    try:
        subprocess.run(
            [pg_restore, "--exit-on-error", "--no-owner", "--dbname", restored, str(dump)], check=True, timeout=300
        )
        verified = _manage("verify_audit", database=restored)
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.startswith(f"OK: {events} events verified")
        assert f"head #{head[0]} {head[1]}" in verified.stdout and "1 checkpoints matched" in verified.stdout

        import psycopg

        with psycopg.connect(restored) as copy:
            codes = {row[0] for row in copy.execute("SELECT code FROM trials_subject")}
            assert {s.code for s in subjects} <= codes
            # The append-only trigger came back with the table.
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                copy.execute("UPDATE compliance_auditevent SET reason = 'edited'")

        # A restore that lost the newest events is told apart: the checkpoint names an event beyond its head.
        with transaction.atomic():
            record_event(actor=coordinator_a, action=AuditAction.SUBJECT_UPDATED, object_type="subject", object_id=1)
        write_checkpoint()
        stale = _manage("verify_audit", database=restored)
        assert stale.returncode == 1 and "the newest events were deleted (truncated)" in stale.stderr
    finally:
        with _admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{restored_name}" WITH (FORCE)')
