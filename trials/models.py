"""Trials, sites, who works where, subjects (identity kept apart), consent, and the
labelled cell product from nanoparticle lot to injection.

Invariants that the database can hold are declared here as constraints, so they hold
whatever writes the row (a service, the admin, a migration, a hand-typed SQL fix).
Rules that need other rows (consent, release status, cells remaining) live in
``trials/services/``.
"""

from __future__ import annotations

import secrets
import zoneinfo
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

IRON_MOLAR_MASS_G_PER_MOL = Decimal("55.845")
# A lot's two iron concentrations may disagree by rounding only.
IRON_CONSISTENCY_TOLERANCE = Decimal("0.005")


def iron_mmol_per_l_from_mg_per_ml(mg_per_ml: Decimal) -> Decimal:
    # mg/mL == g/L; g/L ÷ g/mol = mol/L; × 1000 = mmol/L.
    return (Decimal(mg_per_ml) / IRON_MOLAR_MASS_G_PER_MOL * 1000).quantize(Decimal("0.0001"))


def iron_mg_per_ml_from_mmol_per_l(mmol_per_l: Decimal) -> Decimal:
    return (Decimal(mmol_per_l) * IRON_MOLAR_MASS_G_PER_MOL / 1000).quantize(Decimal("0.0001"))


def iron_mmol_per_l_disagreeing(mg_per_ml: Decimal, mmol_per_l: Decimal) -> Decimal | None:
    """The mmol/L that ``mg_per_ml`` makes, when ``mmol_per_l`` is further from it than
    IRON_CONSISTENCY_TOLERANCE; None when the two agree."""
    expected = iron_mmol_per_l_from_mg_per_ml(mg_per_ml)
    return expected if abs(Decimal(mmol_per_l) - expected) > expected * IRON_CONSISTENCY_TOLERANCE else None


def validate_time_zone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{value!r} is not an IANA time zone (e.g. 'Europe/Berlin')", code="invalid_time_zone"
        ) from None


def _new_deidentification_secret() -> str:
    return secrets.token_hex(32)


def _default_off_target_alert_percent() -> Decimal:
    return Decimal(str(settings.OFF_TARGET_ALERT_PERCENT_DEFAULT))


# ISBT 128 donation identification number shape: facility (letter + 4 digits), year
# (2 digits), serial (6 digits), optionally a product suffix. Only capitals and digits,
# so no name or free text can hide in it.
isbt128_validator = RegexValidator(
    r"^[A-Z][0-9]{4}[0-9]{2}[0-9]{6}(-[A-Z0-9]{1,8})?$",
    "Use the ISBT 128 shape: facility letter + 4 digits, 2-digit year, 6-digit serial, "
    "optional '-SUFFIX' (capitals and digits only), e.g. W123426000123-CT01.",
)


class Role(models.TextChoices):
    COORDINATOR = "coordinator", "Trial coordinator"
    IMAGING_STAFF = "imaging_staff", "Site imaging staff"
    INVESTIGATOR = "investigator", "Investigator"
    MONITOR = "monitor", "Monitor"
    SPONSOR = "sponsor", "Sponsor data manager"
    AUDITOR = "auditor", "Auditor"
    # Keeps what the trial's sites share (nanoparticle lots, consent document versions);
    # sees no site's subjects.
    TRIAL_MANAGER = "trial_manager", "Trial manager"


# Roles that work at one site, and roles held for a whole trial.
SITE_ROLES = (Role.COORDINATOR, Role.IMAGING_STAFF, Role.INVESTIGATOR)
TRIAL_WIDE_ROLES = (Role.MONITOR, Role.SPONSOR, Role.AUDITOR, Role.TRIAL_MANAGER)


class TrialPhase(models.TextChoices):
    PHASE_1 = "I", "Phase I"
    PHASE_1_2 = "I/II", "Phase I/II"
    PHASE_2 = "II", "Phase II"
    PHASE_3 = "III", "Phase III"


class TrialStatus(models.TextChoices):
    PLANNED = "planned", "Planned"
    RECRUITING = "recruiting", "Recruiting"
    ACTIVE = "active", "Active, not recruiting"
    CLOSED = "closed", "Closed"


class Trial(models.Model):
    Phase = TrialPhase
    Status = TrialStatus
    protocol_number = models.CharField(
        max_length=32,
        unique=True,
        validators=[RegexValidator(r"^[A-Z0-9][A-Z0-9-]{1,31}$", "Capitals, digits and '-' only.")],
    )
    title = models.CharField(max_length=300)
    phase = models.CharField(max_length=8, choices=Phase.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLANNED)
    off_target_alert_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=_default_off_target_alert_percent,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )
    # Keys the UID remapping and pseudonyms of de-identified exports. Never serialised,
    # never shown in the admin.
    deidentification_secret = models.CharField(max_length=64, default=_new_deidentification_secret, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["protocol_number"]
        constraints = [
            models.CheckConstraint(
                condition=Q(off_target_alert_percent__gte=0, off_target_alert_percent__lte=100),
                name="trial_off_target_alert_percent_0_100",
            ),
            models.CheckConstraint(condition=Q(phase__in=TrialPhase.values), name="trial_phase_valid"),
            models.CheckConstraint(condition=Q(status__in=TrialStatus.values), name="trial_status_valid"),
        ]

    def __str__(self) -> str:
        return self.protocol_number


class Site(models.Model):
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="sites")
    code = models.CharField(
        max_length=16, validators=[RegexValidator(r"^[A-Z0-9]{1,16}$", "Capitals and digits only.")]
    )
    name = models.CharField(max_length=200)
    time_zone = models.CharField(max_length=64, validators=[validate_time_zone])

    class Meta:
        ordering = ["trial_id", "code"]
        constraints = [models.UniqueConstraint(fields=["trial", "code"], name="site_code_unique_per_trial")]

    def __str__(self) -> str:
        return f"{self.trial.protocol_number}/{self.code}"


class Membership(models.Model):
    """A user's role in a trial: at one site (``site`` set) or trial-wide (``site`` empty)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="trial_memberships")
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="memberships")
    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.PROTECT, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trial_id", "site_id", "user_id"]
        constraints = [
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
            # Site roles are held at exactly one site; monitors, sponsors and auditors read
            # the whole trial and are tied to no site.
            models.CheckConstraint(
                condition=(Q(role__in=[r.value for r in SITE_ROLES], site__isnull=False))
                | (Q(role__in=[r.value for r in TRIAL_WIDE_ROLES], site__isnull=True)),
                name="membership_site_xor_trial_wide",
            ),
            models.UniqueConstraint(
                fields=["user", "site", "role"], condition=Q(site__isnull=False), name="membership_unique_at_site"
            ),
            models.UniqueConstraint(
                fields=["user", "trial", "role"], condition=Q(site__isnull=True), name="membership_unique_trial_wide"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.role} @ {self.site or self.trial}"

    @property
    def trial_wide(self) -> bool:
        return self.site_id is None

    def clean(self):
        if self.trial_id and self.site is not None and self.site.trial_id != self.trial_id:
            raise ValidationError({"site": "The site belongs to another trial."})


class SubjectStatus(models.TextChoices):
    SCREENING = "screening", "Screening"
    ENROLLED = "enrolled", "Enrolled"
    COMPLETED = "completed", "Completed"
    WITHDRAWN = "withdrawn", "Withdrawn"


class Subject(models.Model):
    """A pseudonymous trial subject. Nothing here identifies a person: see SubjectIdentity."""

    Status = SubjectStatus
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="subjects")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="subjects")
    # Generated by the service from protocol, site and a per-site serial: never from identity.
    code = models.CharField(max_length=64, editable=False)
    enrolment_date = models.DateField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCREENING)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trial_id", "code"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "code"], name="subject_code_unique_per_trial"),
            models.CheckConstraint(condition=Q(status__in=SubjectStatus.values), name="subject_status_valid"),
        ]
        indexes = [models.Index(fields=["site", "code"])]

    def __str__(self) -> str:
        return self.code

    def clean(self):
        if self.trial_id and self.site is not None and self.site.trial_id != self.trial_id:
            raise ValidationError({"site": "The site belongs to another trial."})


class SubjectIdentity(models.Model):
    """Protected health information, in its own table so that no subject query joins it
    by accident. Read only through ``services.subject_identity_read`` (PHI roles, audited)."""

    subject = models.OneToOneField(Subject, on_delete=models.PROTECT, primary_key=True, related_name="identity")
    full_name = models.CharField(max_length=200)
    date_of_birth = models.DateField()
    medical_record_number = models.CharField(max_length=64)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "subject identities"

    def __str__(self) -> str:
        # Never the name: this string ends up in logs and admin breadcrumbs.
        return f"identity of subject #{self.subject_id}"


class ConsentScope(models.TextChoices):
    IMAGING = "imaging", "Imaging"
    LONGITUDINAL_IMAGING = "longitudinal_imaging", "Longitudinal imaging"
    DATA_SHARING = "data_sharing", "Data sharing"


class ConsentDocument(models.Model):
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="consent_documents")
    version = models.CharField(max_length=32)
    irb_approval_date = models.DateField()
    effective_date = models.DateField()
    file = models.FileField(upload_to="consent_documents/%Y/")
    sha256 = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trial_id", "effective_date", "id"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "version"], name="consent_document_version_unique_per_trial"),
            models.CheckConstraint(
                condition=Q(effective_date__gte=F("irb_approval_date")),
                name="consent_document_effective_after_irb_approval",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.trial.protocol_number} consent v{self.version}"


class Consent(models.Model):
    """A subject's signature on one consent document version, with the scopes agreed.

    ``withdrawn_scopes`` maps each withdrawn scope to the UTC time it was withdrawn
    (ISO 8601), so a question like "was imaging allowed when this scan was taken?" has
    an exact answer even after several partial withdrawals.
    """

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="consents")
    document = models.ForeignKey(ConsentDocument, on_delete=models.PROTECT, related_name="consents")
    scope_imaging = models.BooleanField(default=False)
    scope_longitudinal_imaging = models.BooleanField(default=False)
    scope_data_sharing = models.BooleanField(default=False)
    signed_at = models.DateTimeField()
    obtained_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_scopes = models.JSONField(default=dict, blank=True)
    withdrawal_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["subject_id", "signed_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(scope_imaging=True) | Q(scope_longitudinal_imaging=True) | Q(scope_data_sharing=True),
                name="consent_grants_a_scope",
            ),
            models.CheckConstraint(
                condition=Q(withdrawn_at__isnull=True) | Q(withdrawn_at__gte=F("signed_at")),
                name="consent_withdrawn_after_signed",
            ),
        ]
        indexes = [models.Index(fields=["subject", "signed_at"])]

    def __str__(self) -> str:
        return f"consent of subject #{self.subject_id} on {self.document_id}"

    @property
    def scopes(self) -> list[str]:
        return [s.value for s in ConsentScope if getattr(self, f"scope_{s.value}")]

    def clean(self):
        if not isinstance(self.withdrawn_scopes, dict) or not set(self.withdrawn_scopes) <= set(self.scopes):
            raise ValidationError({"withdrawn_scopes": "Only scopes that were granted can be withdrawn."})
        if bool(self.withdrawn_scopes) != (self.withdrawn_at is not None):
            raise ValidationError({"withdrawn_at": "A withdrawal has both a time and the scopes withdrawn."})


class LotQcStatus(models.TextChoices):
    QUARANTINED = "quarantined", "Quarantined"
    RELEASED = "released", "Released"
    REJECTED = "rejected", "Rejected"


class NanoparticleLot(models.Model):
    QcStatus = LotQcStatus
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="nanoparticle_lots")
    manufacturer = models.CharField(max_length=120)
    product = models.CharField(max_length=120)
    lot_number = models.CharField(max_length=64)
    expiry_date = models.DateField()
    iron_mg_per_ml = models.DecimalField(max_digits=10, decimal_places=4)
    iron_mmol_per_l = models.DecimalField(max_digits=12, decimal_places=4)
    core_size_nm = models.DecimalField(max_digits=7, decimal_places=2)
    hydrodynamic_size_nm = models.DecimalField(max_digits=7, decimal_places=2)
    polydispersity_index = models.DecimalField(
        max_digits=4, decimal_places=3, validators=[MinValueValidator(0), MaxValueValidator(1)]
    )
    coating = models.CharField(max_length=120)
    certificate_of_analysis = models.FileField(upload_to="certificates/%Y/")
    certificate_sha256 = models.CharField(max_length=64, editable=False)
    qc_status = models.CharField(max_length=16, choices=QcStatus.choices, default=QcStatus.QUARANTINED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["manufacturer", "lot_number"]
        constraints = [
            models.UniqueConstraint(fields=["manufacturer", "lot_number"], name="lot_number_unique_per_manufacturer"),
            models.CheckConstraint(
                condition=Q(iron_mg_per_ml__gt=0, iron_mmol_per_l__gt=0), name="lot_iron_concentration_positive"
            ),
            models.CheckConstraint(condition=Q(core_size_nm__gt=0), name="lot_core_size_positive"),
            models.CheckConstraint(
                condition=Q(hydrodynamic_size_nm__gte=F("core_size_nm")), name="lot_hydrodynamic_size_at_least_core"
            ),
            models.CheckConstraint(
                condition=Q(polydispersity_index__gte=0, polydispersity_index__lte=1), name="lot_pdi_0_1"
            ),
            models.CheckConstraint(condition=Q(qc_status__in=LotQcStatus.values), name="lot_qc_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.product} lot {self.lot_number}"

    def clean(self):
        if self.iron_mg_per_ml and self.iron_mmol_per_l and self.iron_mg_per_ml > 0:
            expected = iron_mmol_per_l_disagreeing(self.iron_mg_per_ml, self.iron_mmol_per_l)
            if expected is not None:
                raise ValidationError(
                    {
                        "iron_mmol_per_l": f"{self.iron_mmol_per_l} mmol/L disagrees with {self.iron_mg_per_ml} mg Fe/mL "
                        f"(expected {expected} mmol/L at 55.845 g/mol, within 0.5 %)."
                    }
                )


class BatchProductType(models.TextChoices):
    MSC = "MSC", "Mesenchymal stromal cells"
    CAR_T = "CAR-T", "CAR-T cells"
    NK = "NK", "NK cells"
    DC = "DC", "Dendritic cells"
    OTHER = "other", "Other"


class BatchReleaseStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RELEASED = "released", "Released"
    REJECTED = "rejected", "Rejected"


class CellBatch(models.Model):
    ProductType = BatchProductType
    ReleaseStatus = BatchReleaseStatus
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="cell_batches")
    # The site that manufactured or holds the batch: it decides who sees it.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="cell_batches")
    batch_code = models.CharField(max_length=64)
    product_type = models.CharField(max_length=16, choices=ProductType.choices)
    chain_of_identity_id = models.CharField(max_length=32, unique=True, validators=[isbt128_validator])
    donation_id = models.CharField(max_length=32, validators=[isbt128_validator])
    donor_subject = models.ForeignKey(
        Subject, null=True, blank=True, on_delete=models.PROTECT, related_name="donated_batches"
    )
    allogeneic = models.BooleanField(default=False)
    manufactured_at = models.DateTimeField()
    cell_count = models.PositiveBigIntegerField()
    viability_percent = models.DecimalField(max_digits=5, decimal_places=2)
    # Labelling: empty until the batch is labelled, then all set together.
    nanoparticle_lot = models.ForeignKey(
        NanoparticleLot, null=True, blank=True, on_delete=models.PROTECT, related_name="labelled_batches"
    )
    incubation_concentration_ug_fe_per_ml = models.DecimalField(max_digits=10, decimal_places=3, null=True, blank=True)
    iron_per_cell_pg = models.DecimalField(max_digits=10, decimal_places=3, null=True, blank=True)
    labelling_efficiency_percent = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)
    labelled_at = models.DateTimeField(null=True, blank=True)
    release_status = models.CharField(max_length=16, choices=ReleaseStatus.choices, default=ReleaseStatus.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trial_id", "batch_code"]
        verbose_name_plural = "cell batches"
        constraints = [
            models.UniqueConstraint(fields=["trial", "batch_code"], name="batch_code_unique_per_trial"),
            models.CheckConstraint(
                condition=Q(allogeneic=False, donor_subject__isnull=False)
                | Q(allogeneic=True, donor_subject__isnull=True),
                name="batch_autologous_iff_donor",
            ),
            models.CheckConstraint(condition=Q(cell_count__gt=0), name="batch_cell_count_positive"),
            models.CheckConstraint(
                condition=Q(viability_percent__gte=0, viability_percent__lte=100), name="batch_viability_0_100"
            ),
            models.CheckConstraint(
                condition=Q(labelling_efficiency_percent__isnull=True)
                | Q(labelling_efficiency_percent__gte=0, labelling_efficiency_percent__lte=100),
                name="batch_labelling_efficiency_0_100",
            ),
            models.CheckConstraint(
                condition=Q(
                    nanoparticle_lot__isnull=True,
                    labelled_at__isnull=True,
                    incubation_concentration_ug_fe_per_ml__isnull=True,
                    iron_per_cell_pg__isnull=True,
                    labelling_efficiency_percent__isnull=True,
                )
                | Q(
                    nanoparticle_lot__isnull=False,
                    labelled_at__isnull=False,
                    incubation_concentration_ug_fe_per_ml__gt=0,
                    iron_per_cell_pg__gt=0,
                    labelling_efficiency_percent__isnull=False,
                ),
                name="batch_labelling_all_or_nothing",
            ),
            models.CheckConstraint(
                condition=Q(release_status__in=BatchReleaseStatus.values), name="batch_release_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.batch_code

    @property
    def autologous(self) -> bool:
        return not self.allogeneic

    def clean(self):
        if self.trial_id and self.site is not None and self.site.trial_id != self.trial_id:
            raise ValidationError({"site": "The site belongs to another trial."})
        if self.donor_subject is not None and self.donor_subject.trial_id != self.trial_id:
            raise ValidationError({"donor_subject": "The donor is a subject of another trial."})


class InjectionRoute(models.TextChoices):
    INTRAVENOUS = "intravenous", "Intravenous"
    INTRAMYOCARDIAL = "intramyocardial", "Intramyocardial"
    INTRATUMORAL = "intratumoral", "Intratumoral"
    INTRA_ARTERIAL = "intra-arterial", "Intra-arterial"
    SUBCUTANEOUS = "subcutaneous", "Subcutaneous"
    OTHER = "other", "Other"


class Injection(models.Model):
    Route = InjectionRoute
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="injections")
    batch = models.ForeignKey(CellBatch, on_delete=models.PROTECT, related_name="injections")
    administered_cells = models.PositiveBigIntegerField()
    volume_ml = models.DecimalField(max_digits=8, decimal_places=3)
    route = models.CharField(max_length=16, choices=Route.choices)
    anatomical_target = models.CharField(max_length=200)
    administered_at = models.DateTimeField()
    administered_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verified_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # The planned duration of the administration (an infusion over 10 min, an intramyocardial
    # injection of 30 s; 0 = a bolus). None: not given, the platform default
    # (settings.LIVE_INJECTION_EXPECTED_S) applies: live.dose.planned_duration says which.
    planned_duration_s = models.DecimalField(max_digits=9, decimal_places=3, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["subject_id", "administered_at"]
        constraints = [
            models.CheckConstraint(condition=Q(administered_cells__gt=0), name="injection_cells_positive"),
            models.CheckConstraint(condition=Q(volume_ml__gt=0), name="injection_volume_positive"),
            models.CheckConstraint(
                condition=Q(planned_duration_s__isnull=True) | Q(planned_duration_s__gte=0),
                name="injection_planned_duration_not_negative",
            ),
            models.CheckConstraint(condition=Q(route__in=InjectionRoute.values), name="injection_route_valid"),
            # Four eyes: the person who checks the dose is not the one who gives it.
            models.CheckConstraint(
                condition=~Q(administered_by=F("verified_by")), name="injection_verifier_is_not_administrator"
            ),
        ]

    def __str__(self) -> str:
        return f"injection #{self.pk} of {self.batch_id} to subject #{self.subject_id}"
