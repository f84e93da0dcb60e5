from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The bottom layer: the hash-chained audit trail, its actions, the request context,
    access logging and the sign-in lockout. It imports no other app of the project."""

    name = "audit"
    label = "audit"
    verbose_name = "Audit trail, access logging, sign-in lockout"

    def ready(self):
        from axes.signals import user_locked_out
        from django.contrib.auth import signals

        from audit import security

        signals.user_login_failed.connect(security.on_login_failed, dispatch_uid="audit.login_failed")
        signals.user_logged_in.connect(security.on_logged_in, dispatch_uid="audit.logged_in")
        signals.user_logged_out.connect(security.on_logged_out, dispatch_uid="audit.logged_out")
        user_locked_out.connect(security.on_locked_out, dispatch_uid="audit.locked_out")
