"""Serializers for signatures, exports and audit events, and ``SignaturesField``, the
helper other apps add to a serializer so a signed record always shows its signatures."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audit.models import AuditEvent
from compliance.models import ApiToken, Export, Signature, TokenScope
from config.fields import StrictBooleanField


class SignatureOutput(serializers.ModelSerializer):
    object_type = serializers.SerializerMethodField()
    meaning_display = serializers.CharField(source="get_meaning_display", read_only=True)

    class Meta:
        model = Signature
        fields = [
            "id",
            "object_type",
            "object_id",
            "kind",
            "signer_username",
            "printed_name",
            "meaning",
            "meaning_display",
            "signed_at",
            "content_sha256",
            "manifest",
            "valid",
            "invalidated_at",
            "invalidation_reason",
        ]

    def get_object_type(self, signature) -> str:
        return f"{signature.content_type.app_label}.{signature.content_type.model}"


@extend_schema_field(SignatureOutput(many=True))
class SignaturesField(serializers.Field):
    """Read-only list of the record's signatures, re-checked against its current content.

    Usage in any output serializer of a signable model::

        signatures = SignaturesField()
    """

    def __init__(self, **kwargs):
        kwargs.update(source="*", read_only=True)
        super().__init__(**kwargs)

    def to_representation(self, obj):
        from compliance.signatures import signatures_verify

        request = self.context.get("request")
        actor = getattr(request, "user", None) if request is not None else None
        actor = actor if getattr(actor, "is_authenticated", False) else None
        return SignatureOutput(signatures_verify(obj, actor=actor), many=True).data


class SignatureApplyInput(serializers.Serializer):
    object_type = serializers.CharField(help_text="Model label of the record, e.g. trials.subject")
    object_id = serializers.CharField()
    meaning = serializers.ChoiceField(choices=Signature.Meaning.choices)
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class ExportOutput(serializers.ModelSerializer):
    scope = serializers.CharField(source="scope_label", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True)

    class Meta:
        model = Export
        fields = [
            "id",
            "kind",
            "trial",
            "site",
            "subject",
            "scan",
            "scope",
            "requested_by",
            "status",
            "progress_stage",
            "progress_percent",
            "content_type",
            "size_bytes",
            "sha256",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]


class ExportRequestInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Export.Kind.choices)
    trial = serializers.IntegerField()
    site = serializers.IntegerField(required=False, allow_null=True)
    subject = serializers.IntegerField(required=False, allow_null=True)
    scan = serializers.IntegerField(required=False, allow_null=True, help_text="For the DICOM kinds: the scan")


class AuditEventOutput(serializers.ModelSerializer):
    action_name = serializers.CharField(read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "sequence",
            "occurred_at",
            "actor_username",
            "action",
            "action_name",
            "object_type",
            "object_id",
            "trial_id",
            "site_id",
            "subject_id",
            "changes",
            "reason",
            "request_id",
            "client_address",
            "prev_hash",
            "hash",
        ]


class ApiTokenOutput(serializers.ModelSerializer):
    """A token as its owner or an administrator sees it: never the key or its hash."""

    user = serializers.CharField(source="user.username", read_only=True)
    state = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "user",
            "name",
            "scope",
            "prefix",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "revoked_reason",
            "state",
        ]

    def get_state(self, token) -> str:
        from compliance.tokens import token_state

        return token_state(token)


class TokenInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)
    # compliance: roles that read identifiable data need their authenticator code (2FA).
    otp = serializers.CharField(required=False, allow_blank=True, default="", max_length=8)
    # Each request issues a new token, named for the client that will hold it.
    name = serializers.CharField(required=False, default="API client", max_length=100)


class ScopedTokenInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=[TokenScope.SCANNER, TokenScope.READ])
    # The longest life the settings allow, as the schema documents it (compliance.tokens checks it too).
    expires_in_days = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.API_SERVICE_TOKEN_MAX_DAYS
    )
    # An administrator may issue a token for another user (a service account).
    user = serializers.IntegerField(required=False, min_value=1)


class IssuedTokenOutput(serializers.Serializer):
    """The key is in ``token``, shown this once."""

    token = serializers.CharField()
    id = serializers.IntegerField()
    name = serializers.CharField()
    scope = serializers.CharField()
    expires_at = serializers.DateTimeField()


def issued_token_data(issued) -> dict:
    token = issued.token
    return IssuedTokenOutput(
        {"token": issued.key, "id": token.pk, "name": token.name, "scope": token.scope, "expires_at": token.expires_at}
    ).data


class LogoutInput(serializers.Serializer):
    all = StrictBooleanField(required=False, default=False)
