"""Forms only translate what a person typed into a service call's arguments. The rules
live in the services: a RuleViolation comes back and is shown next to its field."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import BaseTemporalField
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from compliance.models import SCAN_EXPORT_KINDS, Export, SignatureMeaning
from config.errors import RuleViolation
from recon.quantify import GEOMETRY_SIZE_KEYS
from trials import site_time
from trials.models import BatchProductType, CellBatch, ConsentScope, InjectionRoute, LotQcStatus, SubjectStatus
from trials.services.batches import LABELLING_FIELDS
from web import pending_uploads

DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]


class ModelChoice(forms.ModelChoiceField):
    """A model choice whose queryset (and label) the form sets per request."""

    def __init__(self, *args, label_of: Callable[[Any], str] = str, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_of = label_of

    def label_from_instance(self, obj) -> str:
        return self.label_of(obj)


def _model_choice(form: forms.BaseForm, name: str) -> ModelChoice:
    field = form.fields[name]
    if not isinstance(field, ModelChoice):
        raise TypeError(f"{type(form).__name__}.{name} is not a ModelChoice")
    return field


def _choice(form: forms.BaseForm, name: str) -> forms.ChoiceField:
    field = form.fields[name]
    if not isinstance(field, forms.ChoiceField):
        raise TypeError(f"{type(form).__name__}.{name} is not a ChoiceField")
    return field


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%d", **kwargs)


class DateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%dT%H:%M", **kwargs)


def _wall_time(value) -> dt.datetime | None:
    """A typed (or prepared) date-time, naive, as the site's clock shows it; None if it
    does not parse."""
    if isinstance(value, dt.datetime):
        return value
    try:  # every one of DATETIME_FORMATS is ISO 8601
        return dt.datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None


class SiteDateTimeInput(DateTimeInput):
    """The date-time box, and below it, only when the time typed is one the site's clock
    showed twice (the hour repeated when summer time ends), a choice of which occurrence:
    sent as ``<name>-occurrence`` (0 the first, 1 the second)."""

    time_zone = "UTC"
    occurrence: int | None = None  # what the person chose, read with the form's data

    def value_from_datadict(self, data, files, name):
        chosen = data.get(f"{name}-occurrence")
        self.occurrence = int(chosen) if chosen in ("0", "1") else None
        return super().value_from_datadict(data, files, name)

    def render(self, name, value, attrs=None, renderer=None):
        box = super().render(name, value, attrs, renderer)
        wall = _wall_time(value) if value not in (None, "") else None
        choices = site_time.occurrences(wall, self.time_zone) if wall is not None else []
        if not choices:
            return box
        # A time shown from the record (not typed) keeps the occurrence it was stored as.
        checked = self.occurrence if self.occurrence is not None else getattr(value, "fold", None)
        base = (attrs or {}).get("id") or f"id_{name}"
        options = format_html_join(
            "",
            '<label for="{}-occurrence-{}"><input type="radio" name="{}-occurrence" id="{}-occurrence-{}" '
            'value="{}"{}> {}</label>',
            (
                (base, fold, name, base, fold, fold, " checked" if checked == fold else "", words)
                for fold, words in choices
            ),
        )
        return format_html(
            '{}<fieldset class="plain occurrence" id="{}-occurrence"><legend>{} happened twice on the site\'s '
            "clock: which one?</legend>{}</fieldset>",
            box,
            base,
            f"{wall:%Y-%m-%d %H:%M}",
            options,
        )


class SiteDateTimeField(forms.DateTimeField):
    """A date-time typed on the site's clock (``time_zone``, set by the form for its site),
    cleaned to UTC; a stored time is shown on the site's clock again (trials.site_time).
    A time the clock showed twice is taken as the occurrence chosen below the box
    (SiteDateTimeInput), and refused, with the choice offered, until one is chosen."""

    time_zone = "UTC"
    widget = SiteDateTimeInput

    def to_python(self, value):
        if value in self.empty_values:
            return None
        # The typed text, read with no zone applied: the site's is applied below.
        wall = value if isinstance(value, dt.datetime) else BaseTemporalField.to_python(self, value)
        occurrence = getattr(self.widget, "occurrence", None)
        return None if wall is None else site_time.to_utc(wall, self.time_zone, occurrence)

    def prepare_value(self, value):
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            return site_time.at_site(value, self.time_zone).replace(tzinfo=None)  # keeps the fold
        return value

    def read_on(self, zone_name: str) -> None:
        self.time_zone = zone_name
        if isinstance(self.widget, SiteDateTimeInput):
            self.widget.time_zone = zone_name
        self.help_text = f"Time in {site_time.label(zone_name)}, the site's clock; stored in UTC."


def date_time_field(label: str, **kwargs) -> SiteDateTimeField:
    return SiteDateTimeField(
        label=label,
        input_formats=DATETIME_FORMATS,
        widget=SiteDateTimeInput(),
        help_text="Time in UTC.",
        **kwargs,
    )


def _now_to_the_minute() -> dt.datetime:
    return timezone.now().replace(second=0, microsecond=0)


class SiteTimesForm(forms.Form):
    """A form whose date-times are entered on one site's clock (``site=``)."""

    def __init__(self, *args, site=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_times_on(site.time_zone if site is not None else "UTC")

    def read_times_on(self, zone_name: str) -> None:
        for name, field in self.fields.items():
            if isinstance(field, SiteDateTimeField):
                field.read_on(zone_name)
                self[name].help_text = field.help_text  # a bound field copies it when made


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
    site = ModelChoice(queryset=None, empty_label=None)
    enrolment_date = forms.DateField(widget=DateInput(), initial=timezone.localdate)
    status = forms.ChoiceField(
        choices=[(SubjectStatus.SCREENING, "Screening"), (SubjectStatus.ENROLLED, "Enrolled")],
        initial=SubjectStatus.ENROLLED,
    )
    full_name = forms.CharField(
        label="Full name",
        max_length=200,
        required=False,
        help_text="Identifiable data: kept apart from the pseudonymous subject code.",
    )
    date_of_birth = forms.DateField(label="Date of birth", widget=DateInput(), required=False)
    medical_record_number = forms.CharField(label="Medical record number", max_length=64, required=False)

    def __init__(self, *args, sites, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "site").queryset = sites

    def clean(self):
        data = super().clean() or {}
        identity = [data.get("full_name"), data.get("date_of_birth"), data.get("medical_record_number")]
        if any(identity) and not all(identity):
            raise ValidationError("Give the full name, date of birth and record number together, or none of them.")
        return data


class ConsentSignForm(SiteTimesForm):
    document = ModelChoice(queryset=None, empty_label=None, label="Consent document version")
    scopes = forms.MultipleChoiceField(
        choices=ConsentScope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[ConsentScope.IMAGING, ConsentScope.LONGITUDINAL_IMAGING],
    )
    signed_at = date_time_field("Signed at", initial=_now_to_the_minute)

    def __init__(self, *args, documents, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "document").queryset = documents
        _model_choice(self, "document").label_of = lambda d: f"v{d.version} (effective {d.effective_date})"


class ConsentWithdrawForm(forms.Form):
    scopes = forms.MultipleChoiceField(
        choices=ConsentScope.choices, widget=forms.CheckboxSelectMultiple, label="Scopes withdrawn"
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Recorded in the audit trail.",
        error_messages={"required": "Give a reason: it is recorded in the audit trail."},
    )

    def __init__(self, *args, consent, **kwargs):
        super().__init__(*args, **kwargs)
        open_scopes = [s for s in consent.scopes if s not in consent.withdrawn_scopes]
        _choice(self, "scopes").choices = [(s, ConsentScope(s).label) for s in open_scopes]


class LotRegisterForm(forms.Form):
    trial = ModelChoice(queryset=None, empty_label=None)
    manufacturer = forms.CharField(max_length=120)
    product = forms.CharField(max_length=120)
    lot_number = forms.CharField(max_length=64)
    expiry_date = forms.DateField(widget=DateInput())
    iron_mg_per_ml = forms.DecimalField(label="Iron (mg Fe/mL)", max_digits=10, decimal_places=4, required=False)
    iron_mmol_per_l = forms.DecimalField(
        label="Iron (mmol Fe/L)",
        max_digits=12,
        decimal_places=4,
        required=False,
        help_text="Give one; the other is computed at 55.845 g/mol.",
    )
    core_size_nm = forms.DecimalField(label="Core size (nm)", max_digits=7, decimal_places=2)
    hydrodynamic_size_nm = forms.DecimalField(label="Hydrodynamic size (nm)", max_digits=7, decimal_places=2)
    polydispersity_index = forms.DecimalField(label="Polydispersity index", max_digits=4, decimal_places=3)
    coating = forms.CharField(max_length=120)
    certificate_of_analysis = forms.FileField(
        label="Certificate of analysis",
        help_text="PDF or scan; its SHA-256 is recorded.",
        error_messages={"required": "Attach the certificate of analysis."},
    )
    certificate_token = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, trials, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "trial").queryset = trials
        self.user = user
        if kept := pending_uploads.name_of(self.data.get("certificate_token", "")):
            self._say_kept(kept)
            # The file kept from a refused attempt (certificate_token) counts: clean().
            self.fields["certificate_of_analysis"].required = False

    def _say_kept(self, name: str) -> None:
        text = f"Attached: {name}, kept from your last attempt. Choose another file only to replace it."
        self.fields["certificate_of_analysis"].help_text = text
        self["certificate_of_analysis"].help_text = text  # the bound field copied it when made

    def clean(self):
        data = super().clean() or {}
        field = self.fields["certificate_of_analysis"]
        if not data.get("certificate_of_analysis") and not field.required:
            kept = pending_uploads.take(self.user, data.get("certificate_token", "")) if self.user else None
            if kept is None:
                self.add_error("certificate_of_analysis", field.error_messages["required"])
            else:
                data["certificate_of_analysis"] = kept
        field.required = True  # as the page shown again says
        return data

    def service_arguments(self) -> dict:
        return {k: v for k, v in self.cleaned_data.items() if k != "certificate_token"}

    def keep_certificate(self) -> None:
        """After a refusal: the attached file is kept, and named in the page shown again."""
        uploaded = self.files.get("certificate_of_analysis")
        if uploaded is None or self.user is None:
            return
        token = pending_uploads.keep(self.user, uploaded)
        # Shown again in the hidden field (one value per name: this form has no multiple choice).
        self.data = {**{name: self.data.get(name) for name in self.data}, "certificate_token": token}
        self._say_kept(uploaded.name or "")


def confirm_field(label: str) -> forms.BooleanField:
    # Checked or not, the service decides whether the decision needed it (and says why).
    return forms.BooleanField(required=False, label=label)


class LotQcForm(forms.Form):
    qc_status = forms.ChoiceField(choices=LotQcStatus.choices, label="QC status")
    reason = forms.CharField(
        max_length=500,
        help_text="Recorded in the audit trail.",
        error_messages={"required": "Give a reason: it is recorded in the audit trail."},
    )
    confirm = confirm_field(
        "I confirm a rejection: it is final, and no batch labelled with this lot at any site "
        "can be released or injected afterwards."
    )


class BatchRegisterForm(SiteTimesForm):
    site = ModelChoice(queryset=None, empty_label=None)
    batch_code = forms.CharField(max_length=64)
    product_type = forms.ChoiceField(choices=BatchProductType.choices)
    chain_of_identity_id = forms.CharField(label="Chain-of-identity id (ISBT 128)", max_length=32)
    donation_id = forms.CharField(label="Donation id (ISBT 128)", max_length=32)
    allogeneic = forms.BooleanField(
        required=False, help_text="Leave unticked for an autologous batch and pick its donor."
    )
    donor_subject = ModelChoice(queryset=None, required=False, label="Donor subject (autologous)")
    manufactured_at = date_time_field("Manufactured at")
    cell_count = forms.IntegerField(min_value=1)
    viability_percent = forms.DecimalField(label="Viability (%)", max_digits=5, decimal_places=2)

    def __init__(self, *args, sites, subjects, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "site").queryset = sites
        _model_choice(self, "donor_subject").queryset = subjects
        zones = sorted({site.time_zone for site in sites})
        if len(zones) == 1:
            self.read_times_on(zones[0])
        else:  # read on the clock of the site chosen above (clean_site, before this field)
            self.fields["manufactured_at"].help_text = "Time on the chosen site's clock: " + ", ".join(
                f"{site.code}: {site_time.label(site.time_zone)}" for site in sites
            )

    def clean_site(self):
        site = self.cleaned_data["site"]
        self.read_times_on(site.time_zone)
        return site


class BatchLabelForm(SiteTimesForm):
    nanoparticle_lot = ModelChoice(queryset=None, empty_label=None)
    incubation_concentration_ug_fe_per_ml = forms.DecimalField(
        label="Incubation (µg Fe/mL)", max_digits=10, decimal_places=3
    )
    iron_per_cell_pg = forms.DecimalField(label="Iron per cell (pg)", max_digits=10, decimal_places=3)
    labelling_efficiency_percent = forms.DecimalField(label="Labelling efficiency (%)", max_digits=5, decimal_places=2)
    labelled_at = date_time_field("Labelled at")
    reason = forms.CharField(max_length=500, initial="labelling recorded")

    def __init__(self, *args, lots, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "nanoparticle_lot").queryset = lots


class BatchReleaseForm(forms.Form):
    release_status = forms.ChoiceField(choices=CellBatch.ReleaseStatus.choices)
    reason = forms.CharField(
        max_length=500,
        help_text="Recorded in the audit trail.",
        error_messages={"required": "Give a reason: it is recorded in the audit trail."},
    )
    confirm = confirm_field("I confirm a rejection: it is final, and none of the batch's cells can be injected.")


def planned_duration_field() -> forms.DecimalField:
    """The injection's planned duration; its rule (not negative) is the service's."""
    return forms.DecimalField(
        label="Planned duration (s)",
        max_digits=9,
        decimal_places=3,
        required=False,
        widget=forms.NumberInput(attrs={"min": "0", "step": "any"}),
        help_text="The planned duration of the administration in seconds: empty for the platform default, "
        "0 for a bolus. The live page assumes the whole dose at a constant rate over it.",
    )


class InjectionForm(SiteTimesForm):
    """Four eyes: the verifier is chosen from the site's clinical staff and re-enters
    their own password at the bedside, so the record says who checked the dose."""

    batch = ModelChoice(queryset=None, empty_label=None, label="Cell batch")
    administered_cells = forms.IntegerField(min_value=1, label="Cells administered")
    volume_ml = forms.DecimalField(label="Volume (mL)", max_digits=8, decimal_places=3)
    route = forms.ChoiceField(choices=InjectionRoute.choices, initial=InjectionRoute.INTRAMYOCARDIAL)
    anatomical_target = forms.CharField(max_length=200)
    administered_at = date_time_field("Administered at")
    administered_by = ModelChoice(queryset=None, empty_label=None, label="Administered by")
    verified_by = ModelChoice(queryset=None, label="Verified by (second person)")
    planned_duration_s = planned_duration_field()
    verifier_password = forms.CharField(
        label="Verifier's password",
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="The verifier types their own password to confirm the dose.",
    )

    def __init__(self, *args, batches, staff, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "batch").queryset = batches
        _model_choice(self, "batch").label_of = lambda b: (
            f"{b.batch_code} · {b.chain_of_identity_id} · {b.cells_remaining:,} cells left"
        )
        for name in ("administered_by", "verified_by"):
            _model_choice(self, name).queryset = staff
            _model_choice(self, name).label_of = lambda u: u.get_full_name() or u.get_username()


class SignForm(forms.Form):
    meaning = forms.ChoiceField(choices=SignatureMeaning.choices, initial=SignatureMeaning.APPROVAL)
    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="Your password, asked again for every signature (21 CFR 11.200).",
    )


class ExportRequestForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[c for c in Export.Kind.choices if c[0] not in SCAN_EXPORT_KINDS],
        initial=Export.Kind.REPORT_PDF,
        help_text="A scan's DICOM study is requested from its viewer page.",
    )
    trial = ModelChoice(queryset=None, empty_label=None)
    site = ModelChoice(queryset=None, required=False, empty_label="whole trial")

    def __init__(self, *args, trials, sites, site_label=None, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "trial").queryset = trials
        _model_choice(self, "site").queryset = sites
        if site_label is not None:  # the sponsor's view names sites by opaque code
            _model_choice(self, "site").label_of = site_label


class UploadForm(forms.Form):
    """The non-file half of the upload page (the file goes through tus, in JS)."""

    injection = ModelChoice(queryset=None, empty_label=None)
    scanner = ModelChoice(queryset=None, empty_label=None)
    hours = forms.FloatField(label="Hours after injection", min_value=0, initial=24)

    def __init__(self, *args, injections, scanners, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "injection").queryset = injections
        _model_choice(self, "injection").label_of = lambda i: (
            f"#{i.pk} · {i.batch.batch_code} · {timezone.localtime(i.administered_at):%Y-%m-%d %H:%M}"
        )
        _model_choice(self, "scanner").queryset = scanners


class CalibrationRegisterForm(forms.Form):
    """A calibration MDF for a scanner's library. The file arrives as a plain multipart
    upload (Django streams one over FILE_UPLOAD_MAX_MEMORY_SIZE to a temporary file); the
    service validates it."""

    scanner = ModelChoice(queryset=None, empty_label=None)
    name = forms.CharField(max_length=200, help_text="E.g. the date and what changed since the last calibration.")
    tracer_product = forms.CharField(
        label="Tracer product",
        max_length=120,
        help_text="As on the nanoparticle lots it quantifies: scans are matched on it.",
    )
    nanoparticle_lot = ModelChoice(
        queryset=None,
        required=False,
        label="Nanoparticle lot",
        help_text="Only when the calibration is valid for this one lot; else every lot of the product.",
    )
    file = forms.FileField(
        label="Calibration MDF (.mdf, .h5)",
        widget=forms.ClearableFileInput(attrs={"accept": ".mdf,.h5,.hdf5,application/x-hdf5"}),
        help_text="Validated on arrival: grid, frequencies, SNR and the delta sample's concentration are read from it.",
    )

    def __init__(self, *args, scanners, lots, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "scanner").queryset = scanners
        _model_choice(self, "scanner").label_of = lambda sc: f"{sc.name} · site {sc.site.code}"
        _model_choice(self, "nanoparticle_lot").queryset = lots
        _model_choice(self, "nanoparticle_lot").label_of = lambda lot: f"{lot.product} · lot {lot.lot_number}"


class CalibrationRetireForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=500,
        help_text="Required: recorded in the audit trail.",
        error_messages={"required": "Give a reason: it is recorded in the audit trail."},
    )


# --------------------------------------------------------------------------- corrections
#
# A correction form starts from the stored values; the view passes only the fields the
# person changed to the *_correct service, which refuses a correction that changes nothing
# and writes the old and new values into the audit trail with the reason.


def reason_field(
    help_text: str = "Required: recorded in the audit trail with the old and new values.",
) -> forms.CharField:
    return forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=500,
        help_text=help_text,
        error_messages={"required": "Give a reason: it is recorded in the audit trail."},
    )


def changed_fields(form: forms.Form, current: dict) -> dict:
    """The cleaned values that differ from ``current`` (datetimes compared to the minute,
    as the form shows them; scopes as sets)."""
    changed = {}
    for name, value in form.cleaned_data.items():
        if name == "reason" or name not in current:
            continue
        old = current[name]
        if isinstance(old, dt.datetime) and isinstance(value, dt.datetime):
            same = old.replace(second=0, microsecond=0) == value.replace(second=0, microsecond=0)
        elif isinstance(old, (list, tuple, set)):
            same = set(old) == set(value or [])
        else:
            same = old == value
        if not same:
            changed[name] = value
    return changed


class SubjectCorrectForm(forms.Form):
    enrolment_date = forms.DateField(widget=DateInput(), label="Enrolment date")
    reason = reason_field()


class SubjectStatusForm(forms.Form):
    status = forms.ChoiceField(
        choices=SubjectStatus.choices, label="New status", help_text="Completed and withdrawn are final."
    )
    reason = reason_field("Required: recorded in the audit trail.")
    confirm = confirm_field(
        "I confirm a completed or withdrawn status: it is final, and no further injection "
        "can be recorded for this subject."
    )

    def __init__(self, *args, current: str, **kwargs):
        super().__init__(*args, **kwargs)
        _choice(self, "status").choices = [(v, label) for v, label in SubjectStatus.choices if v != current]


class InjectionCorrectForm(SiteTimesForm):
    administered_cells = forms.IntegerField(label="Cells administered")
    volume_ml = forms.DecimalField(label="Volume (mL)", max_digits=8, decimal_places=3)
    route = forms.ChoiceField(choices=InjectionRoute.choices)
    anatomical_target = forms.CharField(max_length=200)
    administered_at = date_time_field("Administered at")
    administered_by = ModelChoice(queryset=None, empty_label=None, label="Administered by")
    verified_by = ModelChoice(queryset=None, empty_label=None, label="Verified by (second person)")
    planned_duration_s = planned_duration_field()
    verifier_password = forms.CharField(
        label="New verifier's password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="Only when you name another verifier: that person types their own password.",
    )
    reason = reason_field()

    def __init__(self, *args, staff, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("administered_by", "verified_by"):
            _model_choice(self, name).queryset = staff
            _model_choice(self, name).label_of = lambda u: u.get_full_name() or u.get_username()


class LotCorrectForm(forms.Form):
    expiry_date = forms.DateField(widget=DateInput(), label="Expiry date")
    iron_mg_per_ml = forms.DecimalField(label="Iron (mg Fe/mL)", max_digits=10, decimal_places=4)
    iron_mmol_per_l = forms.DecimalField(
        label="Iron (mmol Fe/L)",
        max_digits=12,
        decimal_places=4,
        help_text="Change one: the other is recomputed at 55.845 g/mol.",
    )
    core_size_nm = forms.DecimalField(label="Core size (nm)", max_digits=7, decimal_places=2)
    hydrodynamic_size_nm = forms.DecimalField(label="Hydrodynamic size (nm)", max_digits=7, decimal_places=2)
    polydispersity_index = forms.DecimalField(label="Polydispersity index", max_digits=4, decimal_places=3)
    coating = forms.CharField(max_length=120)
    reason = reason_field()


class BatchCorrectForm(SiteTimesForm):
    cell_count = forms.IntegerField(label="Cell count")
    viability_percent = forms.DecimalField(label="Viability (%)", max_digits=5, decimal_places=2)
    manufactured_at = date_time_field("Manufactured at")
    chain_of_identity_id = forms.CharField(label="Chain-of-identity id (ISBT 128)", max_length=32)
    donation_id = forms.CharField(label="Donation id (ISBT 128)", max_length=32)
    nanoparticle_lot = ModelChoice(queryset=None, empty_label=None, label="Nanoparticle lot")
    incubation_concentration_ug_fe_per_ml = forms.DecimalField(
        label="Incubation (µg Fe/mL)", max_digits=10, decimal_places=3
    )
    iron_per_cell_pg = forms.DecimalField(label="Iron per cell (pg)", max_digits=10, decimal_places=3)
    labelling_efficiency_percent = forms.DecimalField(label="Labelling efficiency (%)", max_digits=5, decimal_places=2)
    labelled_at = date_time_field("Labelled at")
    reason = reason_field()

    def __init__(self, *args, lots, labelling: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if labelling:
            _model_choice(self, "nanoparticle_lot").queryset = lots
        else:  # not labelled yet (its own action), or released: the labelling is not corrected here
            for name in LABELLING_FIELDS:
                del self.fields[name]


class ConsentCorrectForm(SiteTimesForm):
    signed_at = date_time_field("Signed at")
    scopes = forms.MultipleChoiceField(choices=ConsentScope.choices, widget=forms.CheckboxSelectMultiple)
    reason = reason_field()

    def __init__(self, *args, scopes_locked: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if scopes_locked:  # a withdrawal was recorded: the scopes are what was withdrawn from
            del self.fields["scopes"]


# --------------------------------------------------------------------------- regions of interest

ROI_SHAPES = [("sphere", "Sphere"), ("ellipsoid", "Ellipsoid"), ("box", "Box")]
# Every coordinate and size must lie within 1 m of the scanner centre (the service's rule).
ROI_LIMIT_MM = 1000


def _mm(label: str, **kwargs) -> forms.FloatField:
    return forms.FloatField(
        label=label,
        min_value=-ROI_LIMIT_MM,
        max_value=ROI_LIMIT_MM,
        widget=forms.NumberInput(attrs={"step": "any"}),
        **kwargs,
    )


class RoiDefineForm(forms.Form):
    """Geometry typed in millimetres (scanner coordinates); the service stores metres."""

    name = forms.CharField(max_length=120)
    kind = forms.ChoiceField(
        choices=[("target", "Target"), ("lungs", "Lungs"), ("liver", "Liver"), ("spleen", "Spleen"), ("other", "Other")]
    )
    scan = ModelChoice(queryset=None, required=False, empty_label="every scan of the subject", label="Applies to")
    shape = forms.ChoiceField(choices=ROI_SHAPES)
    centre_x_mm = _mm("Centre x (mm)", initial=0)
    centre_y_mm = _mm("Centre y (mm)", initial=0)
    centre_z_mm = _mm("Centre z (mm)", initial=0)
    size_x_mm = _mm("Size x (mm)", help_text="Radius of a sphere; semi-axis or half-size along x.")
    size_y_mm = _mm("Size y (mm)", required=False, help_text="Not used for a sphere.")
    size_z_mm = _mm("Size z (mm)", required=False, help_text="Not used for a sphere.")

    def __init__(self, *args, scans, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "scan").queryset = scans
        _model_choice(self, "scan").label_of = lambda s: f"scan #{s.pk} · {s.hours_after_injection:g} h"

    def clean(self):
        data = super().clean() or {}
        names = ["size_x_mm"] if data.get("shape") == "sphere" else ["size_x_mm", "size_y_mm", "size_z_mm"]
        for name in names:
            value = data.get(name)
            if value is None and name not in self.errors:
                self.add_error(name, f"A {data.get('shape', 'shape')} needs a size along each axis.")
            elif value is not None and value <= 0:
                self.add_error(name, "A size must be greater than zero.")
        return data

    def geometry(self) -> dict:
        """The service's geometry, in metres."""
        d = self.cleaned_data
        centre = [d[f"centre_{a}_mm"] / 1000 for a in "xyz"]
        size = d["size_x_mm"] / 1000 if d["shape"] == "sphere" else [d[f"size_{a}_mm"] / 1000 for a in "xyz"]
        return {"shape": d["shape"], "center_m": centre, GEOMETRY_SIZE_KEYS[d["shape"]]: size}


# --------------------------------------------------------------------------- scan exports and PACS


class ScanExportForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[(Export.Kind.DICOM_STUDY, "Identified"), (Export.Kind.DICOM_STUDY_DEIDENTIFIED, "De-identified")]
    )


class PacsSendForm(forms.Form):
    destination = ModelChoice(queryset=None, empty_label=None, label="PACS destination")

    def __init__(self, *args, destinations, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "destination").queryset = destinations
        _model_choice(self, "destination").label_of = lambda d: (
            f"{d.name} · {d.describe()}{' · de-identified' if d.deidentify else ''}"
        )
