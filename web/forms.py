"""Forms only translate what a person typed into a service call's arguments. The rules
live in the services: a RuleViolation comes back and is shown next to its field."""

from __future__ import annotations

from django import forms
from django.contrib.auth.hashers import check_password
from django.core.exceptions import ValidationError
from django.utils import timezone

from compliance.models import Export, SignatureMeaning
from config.errors import RuleViolation
from trials.models import BatchProductType, CellBatch, ConsentScope, InjectionRoute, LotQcStatus, SubjectStatus

DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%d", **kwargs)


class DateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%dT%H:%M", **kwargs)


def date_time_field(label: str, help_text: str = "", **kwargs) -> forms.DateTimeField:
    return forms.DateTimeField(label=label, input_formats=DATETIME_FORMATS, widget=DateTimeInput(),
                               help_text=help_text or "Your browser's local time.", **kwargs)


def apply_errors(form: forms.Form, exc: Exception) -> None:
    """A service's refusal, shown next to the field it names (or above the form)."""
    if isinstance(exc, RuleViolation):
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
    elif isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            for message in errors:
                form.add_error(field if field in form.fields else None, message)
    else:
        form.add_error(None, "; ".join(getattr(exc, "messages", [str(exc)])))


class SubjectEnrolForm(forms.Form):
    site = forms.ModelChoiceField(queryset=None, empty_label=None)
    enrolment_date = forms.DateField(widget=DateInput(), initial=timezone.localdate)
    status = forms.ChoiceField(choices=[(SubjectStatus.SCREENING, "Screening"), (SubjectStatus.ENROLLED, "Enrolled")],
                               initial=SubjectStatus.ENROLLED)
    full_name = forms.CharField(label="Full name", max_length=200, required=False,
                                help_text="Identifiable data: kept apart from the pseudonymous subject code.")
    date_of_birth = forms.DateField(label="Date of birth", widget=DateInput(), required=False)
    medical_record_number = forms.CharField(label="Medical record number", max_length=64, required=False)

    def __init__(self, *args, sites, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = sites

    def clean(self):
        data = super().clean()
        identity = [data.get("full_name"), data.get("date_of_birth"), data.get("medical_record_number")]
        if any(identity) and not all(identity):
            raise ValidationError("Give the full name, date of birth and record number together, or none of them.")
        return data


class ConsentSignForm(forms.Form):
    document = forms.ModelChoiceField(queryset=None, empty_label=None, label="Consent document version")
    scopes = forms.MultipleChoiceField(choices=ConsentScope.choices, widget=forms.CheckboxSelectMultiple,
                                       initial=[ConsentScope.IMAGING, ConsentScope.LONGITUDINAL_IMAGING])
    signed_at = date_time_field("Signed at", initial=lambda: timezone.localtime().replace(second=0, microsecond=0))

    def __init__(self, *args, documents, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["document"].queryset = documents
        self.fields["document"].label_from_instance = lambda d: f"v{d.version} (effective {d.effective_date})"


class ConsentWithdrawForm(forms.Form):
    scopes = forms.MultipleChoiceField(choices=ConsentScope.choices, widget=forms.CheckboxSelectMultiple,
                                       label="Scopes withdrawn")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                             help_text="Required: recorded in the audit trail.")

    def __init__(self, *args, consent, **kwargs):
        super().__init__(*args, **kwargs)
        open_scopes = [s for s in consent.scopes if s not in consent.withdrawn_scopes]
        self.fields["scopes"].choices = [(s, ConsentScope(s).label) for s in open_scopes]


class LotRegisterForm(forms.Form):
    trial = forms.ModelChoiceField(queryset=None, empty_label=None)
    manufacturer = forms.CharField(max_length=120)
    product = forms.CharField(max_length=120)
    lot_number = forms.CharField(max_length=64)
    expiry_date = forms.DateField(widget=DateInput())
    iron_mg_per_ml = forms.DecimalField(label="Iron (mg Fe/mL)", max_digits=10, decimal_places=4, required=False)
    iron_mmol_per_l = forms.DecimalField(label="Iron (mmol Fe/L)", max_digits=12, decimal_places=4, required=False,
                                         help_text="Give one; the other is computed at 55.845 g/mol.")
    core_size_nm = forms.DecimalField(label="Core size (nm)", max_digits=7, decimal_places=2)
    hydrodynamic_size_nm = forms.DecimalField(label="Hydrodynamic size (nm)", max_digits=7, decimal_places=2)
    polydispersity_index = forms.DecimalField(label="Polydispersity index", max_digits=4, decimal_places=3)
    coating = forms.CharField(max_length=120)
    certificate_of_analysis = forms.FileField(label="Certificate of analysis",
                                              help_text="PDF or scan; its SHA-256 is recorded.")

    def __init__(self, *args, trials, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["trial"].queryset = trials


class LotQcForm(forms.Form):
    qc_status = forms.ChoiceField(choices=LotQcStatus.choices, label="QC status")
    reason = forms.CharField(max_length=500, required=False)


class BatchRegisterForm(forms.Form):
    site = forms.ModelChoiceField(queryset=None, empty_label=None)
    batch_code = forms.CharField(max_length=64)
    product_type = forms.ChoiceField(choices=BatchProductType.choices)
    chain_of_identity_id = forms.CharField(label="Chain-of-identity id (ISBT 128)", max_length=32)
    donation_id = forms.CharField(label="Donation id (ISBT 128)", max_length=32)
    allogeneic = forms.BooleanField(required=False, help_text="Leave unticked for an autologous batch and pick its donor.")
    donor_subject = forms.ModelChoiceField(queryset=None, required=False, label="Donor subject (autologous)")
    manufactured_at = date_time_field("Manufactured at")
    cell_count = forms.IntegerField(min_value=1)
    viability_percent = forms.DecimalField(label="Viability (%)", max_digits=5, decimal_places=2)

    def __init__(self, *args, sites, subjects, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = sites
        self.fields["donor_subject"].queryset = subjects


class BatchLabelForm(forms.Form):
    nanoparticle_lot = forms.ModelChoiceField(queryset=None, empty_label=None)
    incubation_concentration_ug_fe_per_ml = forms.DecimalField(label="Incubation (µg Fe/mL)", max_digits=10,
                                                               decimal_places=3)
    iron_per_cell_pg = forms.DecimalField(label="Iron per cell (pg)", max_digits=10, decimal_places=3)
    labelling_efficiency_percent = forms.DecimalField(label="Labelling efficiency (%)", max_digits=5, decimal_places=2)
    labelled_at = date_time_field("Labelled at")
    reason = forms.CharField(max_length=500, initial="labelling recorded")

    def __init__(self, *args, lots, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["nanoparticle_lot"].queryset = lots


class BatchReleaseForm(forms.Form):
    release_status = forms.ChoiceField(choices=CellBatch.ReleaseStatus.choices)
    reason = forms.CharField(max_length=500, required=False)


class InjectionForm(forms.Form):
    """Four eyes: the verifier is chosen from the site's clinical staff and re-enters
    their own password at the bedside, so the record says who checked the dose."""

    batch = forms.ModelChoiceField(queryset=None, empty_label=None, label="Cell batch")
    administered_cells = forms.IntegerField(min_value=1, label="Cells administered")
    volume_ml = forms.DecimalField(label="Volume (mL)", max_digits=8, decimal_places=3)
    route = forms.ChoiceField(choices=InjectionRoute.choices, initial=InjectionRoute.INTRAMYOCARDIAL)
    anatomical_target = forms.CharField(max_length=200)
    administered_at = date_time_field("Administered at")
    administered_by = forms.ModelChoiceField(queryset=None, empty_label=None, label="Administered by")
    verified_by = forms.ModelChoiceField(queryset=None, label="Verified by (second person)")
    verifier_password = forms.CharField(label="Verifier's password", widget=forms.PasswordInput(
        attrs={"autocomplete": "off"}), help_text="The verifier types their own password to confirm the dose.")

    def __init__(self, *args, batches, staff, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["batch"].queryset = batches
        self.fields["batch"].label_from_instance = (
            lambda b: f"{b.batch_code} · {b.chain_of_identity_id} · {b.cells_remaining:,} cells left")
        for name in ("administered_by", "verified_by"):
            self.fields[name].queryset = staff
            self.fields[name].label_from_instance = lambda u: u.get_full_name() or u.get_username()

    def clean(self):
        data = super().clean()
        verifier = data.get("verified_by")
        password = data.get("verifier_password")
        if verifier is not None and password and not check_password(password, verifier.password):
            self.add_error("verifier_password", "The verifier's password is wrong: nothing was recorded.")
        return data


class SignForm(forms.Form):
    meaning = forms.ChoiceField(choices=SignatureMeaning.choices, initial=SignatureMeaning.APPROVAL)
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
                               help_text="Your password, asked again for every signature (21 CFR 11.200).")


class ExportRequestForm(forms.Form):
    kind = forms.ChoiceField(choices=Export.Kind.choices, initial=Export.Kind.REPORT_PDF)
    trial = forms.ModelChoiceField(queryset=None, empty_label=None)
    site = forms.ModelChoiceField(queryset=None, required=False, empty_label="whole trial")

    def __init__(self, *args, trials, sites, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["trial"].queryset = trials
        self.fields["site"].queryset = sites


class UploadForm(forms.Form):
    """The non-file half of the upload page (the file goes through tus, in JS)."""

    injection = forms.ModelChoiceField(queryset=None, empty_label=None)
    scanner = forms.ModelChoiceField(queryset=None, empty_label=None)
    hours = forms.FloatField(label="Hours after injection", min_value=0, initial=24)

    def __init__(self, *args, injections, scanners, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["injection"].queryset = injections
        self.fields["injection"].label_from_instance = (
            lambda i: f"#{i.pk} · {i.batch.batch_code} · {timezone.localtime(i.administered_at):%Y-%m-%d %H:%M}")
        self.fields["scanner"].queryset = scanners
