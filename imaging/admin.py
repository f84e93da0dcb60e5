"""PACS destinations in the Django admin (superusers only, see trials.admin).

Adding one goes through ``imaging.pacs.pacs_destination_register`` (rules and audit
event); a registered destination is read-only here. The password is never entered:
``password_env`` names the environment variable that holds it on the workers."""

from django.contrib import admin, messages

from config.errors import RuleViolation
from imaging import pacs
from imaging.models import PacsDestination

_FIELDS = [
    "trial",
    "name",
    "protocol",
    "host",
    "port",
    "called_ae",
    "calling_ae",
    "base_url",
    "username",
    "password_env",
    "deidentify",
    "active",
]


@admin.register(PacsDestination)
class PacsDestinationAdmin(admin.ModelAdmin):
    list_display = ["name", "trial", "protocol", "describe", "deidentify", "active"]
    list_filter = ["protocol", "deidentify", "active"]
    list_select_related = ["trial"]
    fields = tuple(_FIELDS)

    def has_change_permission(self, request, obj=None):
        return obj is None and request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        try:
            saved = pacs.pacs_destination_register(actor=request.user, **{f: form.cleaned_data[f] for f in _FIELDS})
        except RuleViolation as exc:
            messages.error(request, exc.message)
            raise
        obj.pk = saved.pk
