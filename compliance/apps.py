from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance: signatures, reports, exports, API tokens, two-factor"

    def ready(self):
        from audit.chain import register_change_observer, register_context_observer
        from compliance import signatures

        signatures.register_builtin_kinds()
        # A signed record whose content a lower app's service changed loses its signatures
        # in the same transaction (audit.chain.record_change: the one inversion).
        register_change_observer(signatures.signature_invalidate_if_changed)
        # A re-filed record (same content, another subject or time point) loses them all.
        register_context_observer(signatures.signature_invalidate_all)
        # What compliance adds to the lower layers' API views (config.viewsets.VIEW_OUTPUTS):
        # the sponsor's de-identified view, and the signatures a signed record shows.
        from compliance import api_outputs  # after the kinds: its API modules read them at import

        api_outputs.attach_to_api()
