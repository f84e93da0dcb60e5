"""The Django admin: a read-mostly window for platform administrators (superusers).

Writes go through the services (which check rules and write the audit trail), so the
admin shows records and changes none. SubjectIdentity is deliberately not registered:
identity is read only through the audited identity endpoint.
"""

from django.contrib import admin

from trials.models import (
    CellBatch,
    Consent,
    ConsentDocument,
    Injection,
    Membership,
    NanoparticleLot,
    Site,
    Subject,
    Trial,
)


def _superuser_only(request) -> bool:
    return request.user.is_active and request.user.is_superuser


# Staff flags alone never open the admin: only superusers.
admin.site.has_permission = _superuser_only  # type: ignore[method-assign]  # patch the default site in place


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return _superuser_only(request)


@admin.register(Trial)
class TrialAdmin(ReadOnlyAdmin):
    list_display = ["protocol_number", "title", "phase", "status", "off_target_alert_percent"]
    exclude = ["deidentification_secret"]


@admin.register(Site)
class SiteAdmin(ReadOnlyAdmin):
    list_display = ["trial", "code", "name", "time_zone"]
    list_select_related = ["trial"]


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    list_display = ["user", "trial", "site", "role", "active"]
    list_filter = ["role", "active"]
    list_select_related = ["user", "trial", "site"]


@admin.register(Subject)
class SubjectAdmin(ReadOnlyAdmin):
    list_display = ["code", "trial", "site", "status", "enrolment_date"]
    list_filter = ["status"]
    list_select_related = ["trial", "site"]


@admin.register(ConsentDocument)
class ConsentDocumentAdmin(ReadOnlyAdmin):
    list_display = ["trial", "version", "irb_approval_date", "effective_date", "sha256"]


@admin.register(Consent)
class ConsentAdmin(ReadOnlyAdmin):
    list_display = ["subject", "document", "signed_at", "withdrawn_at"]
    list_select_related = ["subject", "document__trial"]


@admin.register(NanoparticleLot)
class NanoparticleLotAdmin(ReadOnlyAdmin):
    list_display = ["product", "manufacturer", "lot_number", "expiry_date", "qc_status"]
    list_filter = ["qc_status"]


@admin.register(CellBatch)
class CellBatchAdmin(ReadOnlyAdmin):
    list_display = ["batch_code", "trial", "site", "product_type", "release_status", "cell_count"]
    list_select_related = ["trial", "site"]


@admin.register(Injection)
class InjectionAdmin(ReadOnlyAdmin):
    list_display = ["id", "subject", "batch", "administered_cells", "administered_at"]
    list_select_related = ["subject", "batch"]
