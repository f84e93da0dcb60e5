from django.apps import AppConfig


class OutboxConfig(AppConfig):
    """Tasks queued in the database first, then relayed to the broker (``outbox.relay``)."""

    name = "outbox"
    label = "outbox"
    verbose_name = "Task outbox"
