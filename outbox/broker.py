"""What the broker holds: the number of messages waiting in each queue.

The sweeps ask before queueing a step again for work that is not claimed: a scan quiet in
``validated`` while the ``recon`` queue holds messages may just be waiting its turn, while
with the queue empty its message was lost (a broker restarted without persistence, the
filesystem broker's task taken by a killed worker)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import kombu.exceptions
from celery import current_app

from outbox.relay import BROKER_ERRORS

log = logging.getLogger(__name__)


def queue_depths(names: Iterable[str]) -> dict[str, int] | None:
    """{queue: messages waiting} (delivered, unacknowledged messages not counted), or None
    when the broker cannot be reached. A queue the broker does not know holds nothing."""
    depths = {}
    try:
        with current_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.default_channel
            for name in names:
                try:
                    depths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except kombu.exceptions.ChannelError:
                    depths[name] = 0
    except BROKER_ERRORS as exc:
        log.warning("broker unavailable, queue depths unknown: %s", exc)
        return None
    return depths
