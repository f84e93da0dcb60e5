"""Queue depths for the operations page: messages waiting in each Celery queue.

Counted by kombu's own transport, as the worker sees the queue: on Redis the lengths of
the queue's lists (one per priority step), on the filesystem broker the message files
of the queue in its folder. Redis also tells how many delivered messages wait for their
acknowledgement (a worker has them, or had them before it died: the visibility timeout
hands those back).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings

from ops.health import declared_queues

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueDepths:
    depths: dict[str, int]  # queue name -> messages waiting
    unacknowledged: int | None  # Redis only: delivered, not yet acknowledged (all queues)
    problem: str = ""  # the broker could not be asked


def _ask(names: list[str]) -> tuple[dict[str, int], int | None]:
    """{queue: messages waiting} and, on Redis, the delivered but unacknowledged count; raises
    when the broker cannot be asked (within ``HEALTH_CHECK_TIMEOUT_SECONDS``)."""
    from kombu import Connection

    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        options.update(socket_connect_timeout=timeout, socket_timeout=timeout, max_retries=0)
    with Connection(url, transport_options=options, connect_timeout=timeout) as conn:
        channel = conn.channel()
        try:
            # A declare is what a worker does; it answers the queue's message count.
            depths = {name: channel.queue_declare(queue=name).message_count for name in names}
            unacked = None
            if url.startswith(("redis://", "rediss://")):
                unacked = int(channel.client.hlen(channel.unacked_key))
        finally:
            channel.close()
    return depths, unacked


def queue_depths() -> QueueDepths:
    """Every declared queue, for the operations page."""
    try:
        depths, unacked = _ask(declared_queues())
    except Exception as exc:  # noqa: BLE001 - the page shows that the broker could not be asked, whatever the cause
        return QueueDepths({}, None, f"the broker could not be asked ({type(exc).__name__})")
    return QueueDepths(depths, unacked)


def messages_waiting(names: list[str]) -> dict[str, int] | None:
    """{queue: messages waiting} for the sweeps, or None when the broker cannot be asked.

    The sweeps ask before queueing again work that is not claimed: a scan quiet in
    ``validated`` while the ``recon`` queue holds messages may just be waiting its turn, while
    with the queue empty its message was lost (a broker restarted without persistence, the
    filesystem broker's task taken by a killed worker)."""
    try:
        return _ask(names)[0]
    except Exception as exc:  # noqa: BLE001 - whatever the cause, the sweep then treats only expired leases
        log.warning("broker unavailable, queue depths unknown: %s", exc)
        return None
