"""Administrators' page of sign-in lockouts.

Administrators see lockouts (django-axes' "Access attempts": username, address,
failures, locked or not) and release them by deleting the rows; every release goes
through ``audit.security.lockout_release`` and is audited.
"""

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin

from audit.security import lockout_release


class AuditedAccessAttemptAdmin(AccessAttemptAdmin):
    def delete_model(self, request, obj):
        lockout_release(
            actor=request.user, attempts=AccessAttempt.objects.filter(pk=obj.pk), reason="released in the admin"
        )

    def delete_queryset(self, request, queryset):
        lockout_release(actor=request.user, attempts=queryset, reason="released in the admin")


if admin.site.is_registered(AccessAttempt):  # AXES_ENABLE_ADMIN may have kept axes' admin away
    admin.site.unregister(AccessAttempt)
admin.site.register(AccessAttempt, AuditedAccessAttemptAdmin)
