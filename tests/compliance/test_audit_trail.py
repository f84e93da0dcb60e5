import datetime as dt
import threading

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction

from audit.actions import AuditAction
from audit.chain import GENESIS_HASH, AuditError, diff, record_event, verify_chain
from audit.context import request_context
from audit.models import AuditEvent
from tests.audit_triggers import tamper
from tests.services import require_postgres

pytestmark = pytest.mark.django_db


def _record(actor, n=1, **extra):
    events = []
    for i in range(n):
        with transaction.atomic():
            events.append(
                record_event(
                    actor=actor,
                    action=AuditAction.SUBJECT_UPDATED,
                    object_type="subject",
                    object_id=i,
                    site_id=1,
                    changes=diff({"status": "screening"}, {"status": "enrolled"}),
                    reason="eligibility confirmed",
                    **extra,
                )
            )
    return events


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="x" * 16)


def test_it_links_each_event_to_the_one_before(alice):
    first, second = _record(alice, 2)
    assert first.sequence == 1 and first.prev_hash == GENESIS_HASH
    assert second.sequence == 2 and second.prev_hash == first.hash
    assert len(second.hash) == 64 and second.hash != first.hash


def test_it_records_actor_changes_reason_and_request_context(alice):
    with request_context(request_id="req-42", client_address="10.1.2.3"):
        (event,) = _record(alice)
    event.refresh_from_db()
    assert event.actor == alice and event.actor_username == "alice"
    assert event.action == AuditAction.SUBJECT_UPDATED
    assert event.changes == {"status": ["screening", "enrolled"]}
    assert event.reason == "eligibility confirmed"
    assert event.request_id == "req-42" and event.client_address == "10.1.2.3"
    assert event.occurred_at.tzinfo is not None and event.occurred_at.utcoffset() == dt.timedelta(0)


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_record_outside_a_transaction(alice):
    with pytest.raises(AuditError, match="inside transaction.atomic"):
        record_event(actor=alice, action=AuditAction.SUBJECT_UPDATED, object_type="subject", object_id=1)
    assert AuditEvent.objects.count() == 0


def test_it_writes_nothing_when_the_change_rolls_back(alice):
    with pytest.raises(RuntimeError), transaction.atomic():  # noqa: PT012 - audit, then fail
        record_event(actor=alice, action=AuditAction.SUBJECT_UPDATED, object_type="subject", object_id=1)
        raise RuntimeError("the service failed after auditing")
    assert AuditEvent.objects.count() == 0


def test_it_verifies_an_intact_chain(alice):
    _record(alice, 5)
    result = verify_chain()
    assert result.ok and result.events_checked == 5 and result.head_sequence == 5
    assert result.head_hash == AuditEvent.objects.get(sequence=5).hash


def test_it_diffs_only_changed_fields():
    assert diff({"a": 1, "b": 2}, {"a": 1, "b": 3}) == {"b": [2, 3]}
    assert diff(None, {"a": dt.date(2026, 1, 2)}) == {"a": [None, "2026-01-02"]}


def test_it_refuses_update_and_delete_of_audit_rows(alice):
    (event,) = _record(alice)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(reason="nothing happened")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    event.refresh_from_db()
    assert event.reason == "eligibility confirmed"


def test_it_refuses_a_direct_sql_update_on_postgresql(alice):
    require_postgres()
    (event,) = _record(alice)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE compliance_auditevent SET reason = 'edited' WHERE id = %s", [event.pk])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:  # noqa: PT012
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # so the deferred trigger fires inside the block
        cursor.execute("TRUNCATE compliance_auditevent CASCADE")
    assert AuditEvent.objects.get(pk=event.pk).reason == "eligibility confirmed"


def test_verify_audit_names_the_first_tampered_event(alice):
    _record(alice, 6)
    tamper("UPDATE compliance_auditevent SET reason = %s WHERE sequence = %s", ["backdated", 4])
    result = verify_chain()
    assert not result.ok and result.first_broken_sequence == 4 and result.events_checked == 3
    with pytest.raises(CommandError, match=r"broken at event #4: .*altered"):
        call_command("verify_audit")


def test_verify_audit_reports_a_deleted_event(alice):
    _record(alice, 4)
    tamper("DELETE FROM compliance_auditevent WHERE sequence = %s", [2])
    result = verify_chain()
    assert not result.ok and result.first_broken_sequence == 3 and "missing" in result.problem


def test_verify_audit_command_prints_the_head(alice, capsys):
    events = _record(alice, 3)
    call_command("verify_audit")
    out = capsys.readouterr().out
    assert "OK: 3 events verified" in out and events[-1].hash in out


@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_writers_leave_one_unbroken_chain():
    require_postgres()
    user = get_user_model().objects.create_user("writer", password="x" * 16)
    per_writer, writers = 25, 8
    barrier = threading.Barrier(writers)
    errors = []

    def write():
        try:
            barrier.wait()
            _record(user, per_writer)
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert AuditEvent.objects.count() == per_writer * writers
    result = verify_chain()
    assert result.ok and result.events_checked == per_writer * writers
    assert list(AuditEvent.objects.values_list("sequence", flat=True)) == list(range(1, per_writer * writers + 1))


def test_it_verifies_events_stamped_on_a_whole_second(alice):
    # SQLite stores such a time without its fraction; the walk must restore ".000000".
    on_the_second = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    with transaction.atomic():
        record_event(
            actor=alice,
            action=AuditAction.SUBJECT_UPDATED,
            object_type="subject",
            object_id=1,
            occurred_at=on_the_second,
        )
    _record(alice, 1)
    result = verify_chain()
    assert result.ok and result.events_checked == 2
