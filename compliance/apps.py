from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance: signatures, reports, exports, API tokens, two-factor"

    def ready(self):
        from compliance import signatures

        signatures.register_builtin_kinds()
