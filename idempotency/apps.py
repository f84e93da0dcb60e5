from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    """Double submissions: a page's one-time form token and the API's ``Idempotency-Key``
    header, one store and one middleware. Beside ``ops`` and ``outbox`` at the bottom of the
    layers: it imports no app of the project."""

    name = "idempotency"
    default_auto_field = "django.db.models.BigAutoField"
