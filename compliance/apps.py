from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance: signatures, reports, exports, API tokens, two-factor"

    def ready(self):
        from audit.chain import register_change_observer
        from compliance import signatures

        signatures.register_builtin_kinds()
        # A signed record whose content a lower app's service changed loses its signatures
        # in the same transaction (audit.chain.record_change: the one inversion).
        register_change_observer(signatures.signature_invalidate_if_changed)
