from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance: audit trail, access logging, signatures"

    def ready(self):
        from axes.signals import user_locked_out
        from django.contrib.auth import signals

        from compliance import security, serializers, signatures, sponsor

        signals.user_login_failed.connect(security.on_login_failed, dispatch_uid="compliance.login_failed")
        signals.user_logged_in.connect(security.on_logged_in, dispatch_uid="compliance.logged_in")
        signals.user_logged_out.connect(security.on_logged_out, dispatch_uid="compliance.logged_out")
        user_locked_out.connect(security.on_locked_out, dispatch_uid="compliance.locked_out")
        signatures.register_builtin_kinds()
        # What compliance adds to the lower layers' API views (config.viewsets.VIEW_OUTPUTS):
        # the sponsor's de-identified view, and the signatures a signed record shows.
        sponsor.attach_to_api()
        serializers.attach_to_api()
