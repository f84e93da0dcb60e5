"""Queue depths for the operations page: messages waiting in each Celery queue.

Counted by kombu's own transport, as the worker sees the queue: on Redis the lengths of
the queue's lists (one per priority step), on the filesystem broker the message files
of the queue in its folder. Redis also tells how many delivered messages wait for their
acknowledgement (a worker has them, or had them before it died: the visibility timeout
hands those back).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from ops.health import declared_queues


@dataclass(frozen=True)
class QueueDepths:
    depths: dict[str, int]  # queue name -> messages waiting
    unacknowledged: int | None  # Redis only: delivered, not yet acknowledged (all queues)
    problem: str = ""  # the broker could not be asked


def queue_depths() -> QueueDepths:
    from kombu import Connection

    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        options.update(socket_connect_timeout=timeout, socket_timeout=timeout, max_retries=0)
    try:
        with Connection(url, transport_options=options, connect_timeout=timeout) as conn:
            channel = conn.channel()
            try:
                # A declare is what a worker does; it answers the queue's message count.
                depths = {name: channel.queue_declare(queue=name).message_count for name in declared_queues()}
                unacked = None
                if url.startswith(("redis://", "rediss://")):
                    unacked = int(channel.client.hlen(channel.unacked_key))
            finally:
                channel.close()
    except Exception as exc:  # noqa: BLE001 - the page shows that the broker could not be asked, whatever the cause
        return QueueDepths({}, None, f"the broker could not be asked ({type(exc).__name__})")
    return QueueDepths(depths, unacked)
