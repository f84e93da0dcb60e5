"""The transactional outbox (issue #17): a task is a row written in the caller's transaction,
sent to the broker after the commit, kept with backoff while the broker is away and sent
by the periodic relay once it is back; a rolled-back transaction queues nothing."""

from __future__ import annotations

import datetime as dt

import kombu.exceptions
import pytest
import redis.exceptions
from celery.app.task import Task
from django.db import transaction
from django.utils import timezone

from outbox import relay as outbox
from outbox.models import OutboxMessage
from outbox.tasks import relay_due

TASK = "outbox.relay"  # any registered task serves: the fake broker only records it


class FakeBroker:
    """``Task.apply_async`` replaced: records (name, args, queue) while up, raises while down."""

    def __init__(self):
        self.sent: list[tuple] = []
        self.error: BaseException | None = None

    def publish(self, task, args=None, kwargs=None, **options):
        if self.error is not None:
            raise self.error
        self.sent.append((task.name, tuple(args or ()), options.get("queue")))


@pytest.fixture
def broker(monkeypatch):
    fake = FakeBroker()
    monkeypatch.setattr(Task, "apply_async", lambda self, *a, **kw: fake.publish(self, *a, **kw))
    return fake


@pytest.mark.django_db(transaction=True)
def test_a_message_is_sent_after_the_commit_and_not_before(broker):
    with transaction.atomic():
        message = outbox.enqueue(TASK, [7], queue="export")
        assert broker.sent == [] and OutboxMessage.objects.get().sent_at is None
    assert broker.sent == [(TASK, (7,), "export")]
    message.refresh_from_db()
    assert message.sent_at is not None and message.attempts == 1 and outbox.pending_count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_queues_nothing(broker):
    def write_then_fail():
        with transaction.atomic():
            outbox.enqueue(TASK, [7])
            raise RuntimeError("the write failed")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert broker.sent == [] and not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "error",
    [
        kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis.exceptions.ConnectionError("Connection closed by server."),
        ConnectionRefusedError(111, "Connection refused"),
    ],
    ids=["kombu", "redis", "socket"],
)
def test_with_the_broker_away_the_message_is_kept_and_sent_once_it_returns(broker, error):
    broker.error = error
    with transaction.atomic():
        outbox.enqueue(TASK, [7])  # the after-commit attempt fails quietly
    message = OutboxMessage.objects.get()
    assert message.sent_at is None and message.attempts == 1 and type(error).__name__ in message.last_error
    assert message.due_at > timezone.now()  # backoff: the next relay waits
    assert outbox.relay() == 0 and broker.sent == []

    broker.error = None
    OutboxMessage.objects.update(due_at=timezone.now())  # the backoff is over
    assert relay_due.apply().get().startswith("1 sent")
    assert broker.sent == [(TASK, (7,), None)]
    assert outbox.relay() == 0 and broker.sent == [(TASK, (7,), None)]  # once
    message.refresh_from_db()
    assert message.sent_at is not None and message.last_error == "" and message.attempts == 2


@pytest.mark.django_db(transaction=True)
def test_after_a_broker_error_the_rest_of_the_batch_waits(broker):
    rows = [OutboxMessage.objects.create(task=TASK, args=[n], key=outbox.message_key(TASK, [n])) for n in range(3)]
    broker.error = kombu.exceptions.OperationalError("down")
    assert outbox.relay() == 0
    assert [OutboxMessage.objects.get(pk=r.pk).attempts for r in rows] == [1, 0, 0]  # one try, not three
    broker.error = None
    OutboxMessage.objects.update(due_at=timezone.now())
    assert outbox.relay() == 3 and [args for _, (args,), _ in broker.sent] == [0, 1, 2]  # oldest first


@pytest.mark.django_db(transaction=True)
def test_a_row_another_relay_took_is_left_alone(broker):
    message = OutboxMessage.objects.create(task=TASK, args=[1], key=outbox.message_key(TASK, [1]))
    OutboxMessage.objects.filter(pk=message.pk).update(
        due_at=timezone.now() + dt.timedelta(seconds=outbox.RELAY_LEASE_SECONDS)
    )
    assert outbox.relay() == 0 and broker.sent == []


@pytest.mark.django_db(transaction=True)
def test_an_unexpected_error_is_kept_too_and_never_raised_into_the_caller(broker):
    broker.error = ValueError("a bug in a task's signature")
    with transaction.atomic():
        outbox.enqueue(TASK, [1])  # the request that queued it is not failed
    assert "ValueError" in OutboxMessage.objects.get().last_error


@pytest.mark.django_db(transaction=True)
def test_the_sweeps_do_not_queue_what_is_pending_or_was_just_queued(broker):
    broker.error = kombu.exceptions.OperationalError("down")
    assert outbox.enqueue(TASK, [5]) is not None
    since = timezone.now() - dt.timedelta(minutes=1)
    assert outbox.enqueue(TASK, [5], unless_since=since) is None  # still pending
    broker.error = None
    OutboxMessage.objects.update(due_at=timezone.now())
    assert outbox.relay() == 1
    assert outbox.enqueue(TASK, [5], unless_since=since) is None  # sent within the minute
    OutboxMessage.objects.update(created_at=since - dt.timedelta(seconds=1))
    assert outbox.enqueue(TASK, [5], unless_since=since) is not None
    assert outbox.enqueue(TASK, [6], unless_since=since) is not None  # other arguments: another task


@pytest.mark.django_db
def test_sent_messages_are_pruned_after_the_keep_period(settings):
    settings.OUTBOX_KEEP_SENT_SECONDS = 3600
    old = timezone.now() - dt.timedelta(hours=2)
    OutboxMessage.objects.create(task=TASK, key="old", sent_at=old)
    OutboxMessage.objects.create(task=TASK, key="recent", sent_at=timezone.now())
    OutboxMessage.objects.create(task=TASK, key="pending", created_at=old)
    assert outbox.prune() == 1
    assert sorted(OutboxMessage.objects.values_list("key", flat=True)) == ["pending", "recent"]


def test_beat_runs_the_relay_and_the_sweep_often(settings):
    schedule = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["outbox.relay"]["schedule"] <= 60
    assert schedule["imaging.sweep_stalled_work"]["schedule"] <= 300
    # The embedded runner's worker runs beat too, and consumes every queue.
    from trials.management.commands.runplatform import worker_command

    command = worker_command()
    assert "--beat" in command
    assert command[command.index("--queues") + 1].split(",") == ["ingest", "recon", "quant", "export"]
