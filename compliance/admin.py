"""Administrators' pages of compliance.

API tokens in the Django admin (superusers only, see trials.admin): listed without their
keys, and revocable through the service, which audits each revocation. (Sign-in lockouts:
``audit.admin``.)
"""

from django.contrib import admin, messages

from compliance import tokens
from compliance.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    fields = readonly_fields = (
        "prefix",
        "user",
        "name",
        "scope",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoked_reason",
    )
    list_display = fields
    list_filter = ["scope", "revoked_reason"]
    search_fields = ["user__username", "name", "prefix"]
    actions = ["revoke_tokens"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke_tokens(self, request, queryset):
        for token in queryset.select_related("user"):
            tokens.token_revoke(actor=request.user, token=token)
        self.message_user(request, f"{queryset.count()} token(s) revoked.", messages.SUCCESS)
