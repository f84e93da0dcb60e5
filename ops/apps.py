from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: health checks for the load balancer and compose, worker heartbeats,
    queue depths. The bottom of the layers: it imports no app of the project."""

    name = "ops"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ops import heartbeat  # noqa: F401 - connects the Celery worker signals
