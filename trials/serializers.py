"""Input and output serializers: they translate JSON to arguments and models to JSON,
and nothing else. Rules live in services; scoping lives in selectors.

No serializer here has an identity field except ``IdentityOutput``, which only the
audited identity endpoint uses.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers

from config.fields import StrictBooleanField
from trials import selectors
from trials.models import (
    CellBatch,
    Consent,
    ConsentDocument,
    ConsentScope,
    Injection,
    NanoparticleLot,
    Site,
    Subject,
    SubjectIdentity,
    Trial,
)


class VisiblePrimaryKeyField(serializers.PrimaryKeyRelatedField):
    """An id that resolves only among the objects the requesting user may see, so an
    id from another site reads as "does not exist"."""

    def __init__(self, selector, **kwargs):
        self.selector = selector
        super().__init__(**kwargs)

    def get_queryset(self):
        return self.selector(self.context["request"].user)


class ActiveUsernameField(serializers.SlugRelatedField):
    default_error_messages = {"null_characters": "Null characters are not allowed."}

    def __init__(self, **kwargs):
        super().__init__(slug_field="username", queryset=get_user_model().objects.filter(is_active=True), **kwargs)

    def to_internal_value(self, data):
        # PostgreSQL refuses a NUL in any query text (a server error): refuse it as input.
        if isinstance(data, str) and "\x00" in data:
            self.fail("null_characters")
        return super().to_internal_value(data)


# --------------------------------------------------------------------------- outputs


class TrialOutput(serializers.ModelSerializer):
    class Meta:
        model = Trial
        # deidentification_secret is never serialised.
        fields = ["id", "protocol_number", "title", "phase", "status", "off_target_alert_percent", "created_at"]


class SiteOutput(serializers.ModelSerializer):
    class Meta:
        model = Site
        fields = ["id", "trial", "code", "name", "time_zone"]


class SubjectOutput(serializers.ModelSerializer):
    site_code = serializers.CharField(source="site.code", read_only=True)

    class Meta:
        model = Subject
        fields = ["id", "code", "trial", "site", "site_code", "enrolment_date", "status", "created_at"]


class IdentityOutput(serializers.ModelSerializer):
    class Meta:
        model = SubjectIdentity
        fields = ["subject", "full_name", "date_of_birth", "medical_record_number", "updated_at"]


class ConsentDocumentOutput(serializers.ModelSerializer):
    file_name = serializers.SerializerMethodField()

    class Meta:
        model = ConsentDocument
        fields = ["id", "trial", "version", "irb_approval_date", "effective_date", "file_name", "sha256", "created_at"]

    def get_file_name(self, document) -> str:
        # The stored name only: files are served by audited download views, never by URL.
        return document.file.name.rsplit("/", 1)[-1]


class ConsentOutput(serializers.ModelSerializer):
    subject_code = serializers.CharField(source="subject.code", read_only=True)
    site = serializers.IntegerField(source="subject.site_id", read_only=True)
    document_version = serializers.CharField(source="document.version", read_only=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ConsentScope.choices), read_only=True)
    obtained_by = serializers.CharField(source="obtained_by.username", read_only=True)
    withdrawn_scopes = serializers.DictField(child=serializers.DateTimeField(), read_only=True)

    class Meta:
        model = Consent
        fields = [
            "id",
            "subject",
            "subject_code",
            "site",
            "document",
            "document_version",
            "scopes",
            "signed_at",
            "obtained_by",
            "withdrawn_at",
            "withdrawn_scopes",
            "withdrawal_reason",
        ]


class LotOutput(serializers.ModelSerializer):
    class Meta:
        model = NanoparticleLot
        fields = [
            "id",
            "trial",
            "manufacturer",
            "product",
            "lot_number",
            "expiry_date",
            "iron_mg_per_ml",
            "iron_mmol_per_l",
            "core_size_nm",
            "hydrodynamic_size_nm",
            "polydispersity_index",
            "coating",
            "certificate_sha256",
            "qc_status",
            "created_at",
        ]


class BatchOutput(serializers.ModelSerializer):
    site_code = serializers.CharField(source="site.code", read_only=True)
    donor_subject_code = serializers.CharField(source="donor_subject.code", read_only=True, default=None)
    cells_injected = serializers.IntegerField(read_only=True)
    cells_remaining = serializers.IntegerField(read_only=True)

    class Meta:
        model = CellBatch
        fields = [
            "id",
            "trial",
            "site",
            "site_code",
            "batch_code",
            "product_type",
            "chain_of_identity_id",
            "donation_id",
            "donor_subject",
            "donor_subject_code",
            "allogeneic",
            "manufactured_at",
            "cell_count",
            "viability_percent",
            "nanoparticle_lot",
            "incubation_concentration_ug_fe_per_ml",
            "iron_per_cell_pg",
            "labelling_efficiency_percent",
            "labelled_at",
            "release_status",
            "cells_injected",
            "cells_remaining",
            "created_at",
        ]


class InjectionOutput(serializers.ModelSerializer):
    subject_code = serializers.CharField(source="subject.code", read_only=True)
    site = serializers.IntegerField(source="subject.site_id", read_only=True)
    batch_code = serializers.CharField(source="batch.batch_code", read_only=True)
    administered_by = serializers.CharField(source="administered_by.username", read_only=True)
    verified_by = serializers.CharField(source="verified_by.username", read_only=True)

    class Meta:
        model = Injection
        fields = [
            "id",
            "subject",
            "subject_code",
            "site",
            "batch",
            "batch_code",
            "administered_cells",
            "volume_ml",
            "route",
            "anatomical_target",
            "administered_at",
            "administered_by",
            "verified_by",
            "planned_duration_s",
            "created_at",
        ]


# --------------------------------------------------------------------------- inputs

PLANNED_DURATION_HELP = (
    "The planned duration of the administration in seconds (an infusion over 10 min: 600; 0: a bolus); "
    "null or absent: not given, the platform default applies. The live page's dose injected so far "
    "assumes the whole dose at a constant rate over it. Not negative."
)


class ReasonInput(serializers.Serializer):
    reason = serializers.CharField(
        help_text="Why the record changes; kept in the audit trail. At least 8 "
        "characters in words; placeholders such as 'n/a' or 'test' are refused."
    )


class ConfirmInput(serializers.Serializer):
    confirm = StrictBooleanField(
        default=False,
        help_text="Must be true for a decision that cannot be undone "
        "(a rejection, a final subject status); otherwise the answer is 400 "
        "confirmation_required, saying what would follow.",
    )


class SubjectEnrolInput(serializers.Serializer):
    site = VisiblePrimaryKeyField(selectors.visible_sites, queryset=Site.objects.all())
    enrolment_date = serializers.DateField()
    # Only screening or enrolled are accepted (the service says why otherwise); the full
    # choice set keeps one "status" enum in the schema.
    status = serializers.ChoiceField(choices=Subject.Status.choices, default=Subject.Status.SCREENING)


class SubjectStatusInput(ReasonInput, ConfirmInput):
    status = serializers.ChoiceField(choices=Subject.Status.choices)


class IdentityInput(serializers.Serializer):
    full_name = serializers.CharField(max_length=200)
    date_of_birth = serializers.DateField()
    medical_record_number = serializers.CharField(max_length=64)
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Required when an identity is already recorded."
    )


class ConsentDocumentInput(serializers.Serializer):
    trial = VisiblePrimaryKeyField(selectors.visible_trials, queryset=Trial.objects.all())
    version = serializers.CharField(max_length=32)
    irb_approval_date = serializers.DateField()
    effective_date = serializers.DateField()
    file = serializers.FileField()


class ConsentSignInput(serializers.Serializer):
    subject = VisiblePrimaryKeyField(selectors.subjects_visible_to, queryset=Subject.objects.all())
    document = VisiblePrimaryKeyField(selectors.consent_documents_visible_to, queryset=ConsentDocument.objects.all())
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ConsentScope.choices), allow_empty=False)
    signed_at = serializers.DateTimeField()


class ConsentWithdrawInput(ReasonInput):
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ConsentScope.choices), allow_empty=False)
    withdrawn_at = serializers.DateTimeField(required=False, help_text="Defaults to now.")


class LotRegisterInput(serializers.Serializer):
    trial = VisiblePrimaryKeyField(selectors.visible_trials, queryset=Trial.objects.all())
    manufacturer = serializers.CharField(max_length=120)
    product = serializers.CharField(max_length=120)
    lot_number = serializers.CharField(max_length=64)
    expiry_date = serializers.DateField()
    iron_mg_per_ml = serializers.DecimalField(max_digits=10, decimal_places=4, required=False)
    iron_mmol_per_l = serializers.DecimalField(max_digits=12, decimal_places=4, required=False)
    core_size_nm = serializers.DecimalField(max_digits=7, decimal_places=2)
    hydrodynamic_size_nm = serializers.DecimalField(max_digits=7, decimal_places=2)
    polydispersity_index = serializers.DecimalField(max_digits=4, decimal_places=3)
    coating = serializers.CharField(max_length=120)
    certificate_of_analysis = serializers.FileField()


class LotQcStatusInput(ReasonInput, ConfirmInput):
    qc_status = serializers.ChoiceField(choices=NanoparticleLot.QcStatus.choices)


class BatchRegisterInput(serializers.Serializer):
    site = VisiblePrimaryKeyField(selectors.visible_sites, queryset=Site.objects.all())
    batch_code = serializers.CharField(max_length=64)
    product_type = serializers.ChoiceField(choices=CellBatch.ProductType.choices)
    chain_of_identity_id = serializers.CharField(max_length=32)
    donation_id = serializers.CharField(max_length=32)
    donor_subject = VisiblePrimaryKeyField(
        selectors.subjects_visible_to, queryset=Subject.objects.all(), required=False, allow_null=True, default=None
    )
    allogeneic = StrictBooleanField(default=False)
    manufactured_at = serializers.DateTimeField()
    cell_count = serializers.IntegerField(min_value=1)
    viability_percent = serializers.DecimalField(max_digits=5, decimal_places=2)


class BatchLabelInput(ReasonInput):
    nanoparticle_lot = VisiblePrimaryKeyField(selectors.lots_visible_to, queryset=NanoparticleLot.objects.all())
    incubation_concentration_ug_fe_per_ml = serializers.DecimalField(max_digits=10, decimal_places=3)
    iron_per_cell_pg = serializers.DecimalField(max_digits=10, decimal_places=3)
    labelling_efficiency_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
    labelled_at = serializers.DateTimeField()


class BatchReleaseInput(ReasonInput, ConfirmInput):
    release_status = serializers.ChoiceField(choices=CellBatch.ReleaseStatus.choices)


class InjectionRecordInput(serializers.Serializer):
    subject = VisiblePrimaryKeyField(selectors.subjects_visible_to, queryset=Subject.objects.all())
    batch = VisiblePrimaryKeyField(selectors.batches_visible_to, queryset=CellBatch.objects.all())
    administered_cells = serializers.IntegerField(min_value=1)
    volume_ml = serializers.DecimalField(max_digits=8, decimal_places=3)
    route = serializers.ChoiceField(choices=Injection.Route.choices)
    anatomical_target = serializers.CharField(max_length=200)
    administered_at = serializers.DateTimeField()
    administered_by = ActiveUsernameField()
    verified_by = ActiveUsernameField()
    verifier_password = serializers.CharField(
        style={"input_type": "password"},
        trim_whitespace=False,
        write_only=True,
        help_text="The verifier's own password (four eyes); a wrong one counts toward the verifier's lockout.",
    )
    planned_duration_s = serializers.DecimalField(
        max_digits=9, decimal_places=3, required=False, allow_null=True, default=None, help_text=PLANNED_DURATION_HELP
    )


# Corrections (PATCH on a detail route): every field optional, the reason required by
# the service (so an empty one answers "reason_required", as in every other change).


class CorrectionInput(serializers.Serializer):
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Why the record is corrected; kept in the audit trail with the old and new values. Required.",
    )


class SubjectCorrectInput(CorrectionInput):
    enrolment_date = serializers.DateField(required=False)


class InjectionCorrectInput(CorrectionInput):
    administered_cells = serializers.IntegerField(min_value=1, required=False)
    volume_ml = serializers.DecimalField(max_digits=8, decimal_places=3, required=False)
    route = serializers.ChoiceField(choices=Injection.Route.choices, required=False)
    anatomical_target = serializers.CharField(max_length=200, required=False)
    administered_at = serializers.DateTimeField(required=False)
    administered_by = ActiveUsernameField(required=False)
    verified_by = ActiveUsernameField(required=False)
    planned_duration_s = serializers.DecimalField(
        max_digits=9, decimal_places=3, required=False, allow_null=True, help_text=PLANNED_DURATION_HELP
    )
    verifier_password = serializers.CharField(
        style={"input_type": "password"},
        trim_whitespace=False,
        write_only=True,
        required=False,
        help_text="Required when verified_by names another person: that person's own password.",
    )


class LotCorrectInput(CorrectionInput):
    expiry_date = serializers.DateField(required=False)
    iron_mg_per_ml = serializers.DecimalField(
        max_digits=10,
        decimal_places=4,
        required=False,
        help_text="Corrects iron_mmol_per_l too, unless both are given.",
    )
    iron_mmol_per_l = serializers.DecimalField(
        max_digits=12, decimal_places=4, required=False, help_text="Corrects iron_mg_per_ml too, unless both are given."
    )
    core_size_nm = serializers.DecimalField(max_digits=7, decimal_places=2, required=False)
    hydrodynamic_size_nm = serializers.DecimalField(max_digits=7, decimal_places=2, required=False)
    polydispersity_index = serializers.DecimalField(max_digits=4, decimal_places=3, required=False)
    coating = serializers.CharField(max_length=120, required=False)


class BatchCorrectInput(CorrectionInput):
    cell_count = serializers.IntegerField(min_value=1, required=False)
    viability_percent = serializers.DecimalField(max_digits=5, decimal_places=2, required=False)
    manufactured_at = serializers.DateTimeField(required=False)
    chain_of_identity_id = serializers.CharField(
        max_length=32, required=False, help_text="Only before the batch's first injection."
    )
    donation_id = serializers.CharField(
        max_length=32, required=False, help_text="Only before the batch's first injection."
    )
    nanoparticle_lot = VisiblePrimaryKeyField(
        selectors.lots_visible_to,
        queryset=NanoparticleLot.objects.all(),
        required=False,
        help_text="Labelling: only while the batch is pending.",
    )
    incubation_concentration_ug_fe_per_ml = serializers.DecimalField(max_digits=10, decimal_places=3, required=False)
    iron_per_cell_pg = serializers.DecimalField(max_digits=10, decimal_places=3, required=False)
    labelling_efficiency_percent = serializers.DecimalField(max_digits=5, decimal_places=2, required=False)
    labelled_at = serializers.DateTimeField(required=False)


class ConsentCorrectInput(CorrectionInput):
    signed_at = serializers.DateTimeField(required=False)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ConsentScope.choices),
        allow_empty=False,
        required=False,
        help_text="Only before any withdrawal from this consent.",
    )
