from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance: signatures, reports, exports, API tokens, two-factor"

    def ready(self):
        from compliance import serializers, signatures, sponsor

        signatures.register_builtin_kinds()
        # What compliance adds to the lower layers' API views (config.viewsets.VIEW_OUTPUTS):
        # the sponsor's de-identified view, and the signatures a signed record shows.
        sponsor.attach_to_api()
        serializers.attach_to_api()
