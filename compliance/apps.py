from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance: audit trail, access logging, signatures"

    def ready(self):
        from axes.signals import user_locked_out
        from django.contrib.auth import signals

        from compliance import security, signatures
        from compliance.audit import register_change_observer

        signals.user_login_failed.connect(security.on_login_failed, dispatch_uid="compliance.login_failed")
        signals.user_logged_in.connect(security.on_logged_in, dispatch_uid="compliance.logged_in")
        signals.user_logged_out.connect(security.on_logged_out, dispatch_uid="compliance.logged_out")
        user_locked_out.connect(security.on_locked_out, dispatch_uid="compliance.locked_out")
        signatures.register_builtin_kinds()
        # A signed record whose content a lower app's service changed loses its signatures
        # in the same transaction (compliance.audit.record_change: the one inversion).
        register_change_observer(signatures.signature_invalidate_if_changed)
