from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.db import models
from django.db.models import Q

from config.token_scopes import TokenScope


class SignatureMeaning(models.TextChoices):
    """21 CFR 11.50(a)(3): the meaning of a signature."""

    REVIEW = "review", "Review"
    APPROVAL = "approval", "Approval"
    RESPONSIBILITY = "responsibility", "Responsibility"
    AUTHORSHIP = "authorship", "Authorship"


class Signature(models.Model):
    """An electronic signature on one record (21 CFR 11.50, 11.70, 11.200).

    It carries the printed name, UTC time and meaning, and is linked to the exact record
    by ``content_type`` + ``object_id`` and to the exact content by ``content_sha256``
    (SHA-256 of the canonical JSON that the signable kind's registry function returns).
    A later change of that content makes ``signatures_verify`` mark it invalid; it is
    never deleted or re-pointed.
    """

    Meaning = SignatureMeaning
    signer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="signatures")
    signer_username = models.CharField(max_length=150)
    printed_name = models.CharField(max_length=300)
    meaning = models.CharField(max_length=16, choices=Meaning.choices)
    signed_at = models.DateTimeField()
    content_type = models.ForeignKey("contenttypes.ContentType", on_delete=models.PROTECT, related_name="+")
    object_id = models.CharField(max_length=64)
    signed_record = GenericForeignKey("content_type", "object_id")
    kind = models.CharField(max_length=64)  # the registry's name for what was signed
    content_sha256 = models.CharField(max_length=64)
    manifest = models.TextField()
    trial_id = models.BigIntegerField()
    site_id = models.BigIntegerField(null=True, blank=True)
    subject_id = models.BigIntegerField(null=True, blank=True)
    # The audit event that recorded the signing: later events on the same subject name
    # what changed when the signature is invalidated.
    audit_sequence = models.PositiveBigIntegerField(null=True, blank=True)
    valid = models.BooleanField(default=True)
    invalidated_at = models.DateTimeField(null=True, blank=True)
    invalidation_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["signed_at", "id"]
        indexes = [models.Index(fields=["content_type", "object_id", "signed_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(meaning__in=SignatureMeaning.values), name="signature_meaning_valid"),
            models.CheckConstraint(
                condition=Q(valid=True, invalidated_at__isnull=True) | Q(valid=False, invalidated_at__isnull=False),
                name="signature_invalidated_iff_not_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_meaning_display()} by {self.printed_name} on {self.kind} {self.object_id}"


class ExportKind(models.TextChoices):
    REPORT_PDF = "report_pdf", "Report (PDF)"
    REPORT_CSV = "report_csv", "Report data (zip of CSV)"
    AUDIT_CSV = "audit_csv", "Audit-trail extract (CSV)"
    AUDIT_JSON = "audit_json", "Audit-trail extract (JSON)"
    ODM_XML = "odm_xml", "CDISC ODM 1.3 clinical data (XML)"
    SPONSOR_DEIDENTIFIED = "sponsor_deidentified", "De-identified sponsor data set (zip of CSV)"
    # Scope: one scan (``Export.scan``); built by imaging.dicom_export.
    DICOM_STUDY = "dicom_study", "DICOM study of a scan (zip)"
    DICOM_STUDY_DEIDENTIFIED = "dicom_study_deidentified", "De-identified DICOM study of a scan (zip)"


SCAN_EXPORT_KINDS = frozenset({ExportKind.DICOM_STUDY, ExportKind.DICOM_STUDY_DEIDENTIFIED})


class ExportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class Export(models.Model):
    """One requested export, built by a Celery task on the ``export`` queue.

    Scope: a trial, or one site of it, or one subject (``site`` / ``subject`` set), or
    for the DICOM kinds one scan (``scan`` set, with its subject, site and trial).
    ``progress_stage`` / ``progress_percent`` say how far the worker is."""

    Kind = ExportKind
    Status = ExportStatus
    kind = models.CharField(max_length=24, choices=Kind.choices)
    trial = models.ForeignKey("trials.Trial", on_delete=models.PROTECT, related_name="exports")
    site = models.ForeignKey("trials.Site", null=True, blank=True, on_delete=models.PROTECT, related_name="exports")
    subject = models.ForeignKey(
        "trials.Subject", null=True, blank=True, on_delete=models.PROTECT, related_name="exports"
    )
    # Plain string reference: compliance keeps no import of imaging.
    scan = models.ForeignKey("imaging.Scan", null=True, blank=True, on_delete=models.PROTECT, related_name="exports")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="exports")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    file = models.CharField(max_length=500, blank=True)  # relative to MEDIA_ROOT; served by the audited view only
    content_type = models.CharField(max_length=100, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    progress_stage = models.CharField(max_length=32, blank=True)
    progress_percent = models.FloatField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The running build's claim: its task id and when it last renewed the lease
    # (``services.exports``: a claim not renewed for EXPORT_CLAIM_LEASE_SECONDS is a dead worker's).
    claim_token = models.CharField(max_length=255, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=ExportKind.values), name="export_kind_valid"),
            models.CheckConstraint(condition=Q(status__in=ExportStatus.values), name="export_status_valid"),
            models.CheckConstraint(
                condition=~Q(status="ready") | (~Q(file="") & ~Q(sha256="")), name="export_ready_has_file"
            ),
            models.CheckConstraint(
                condition=Q(
                    kind__in=["dicom_study", "dicom_study_deidentified"], scan__isnull=False, subject__isnull=False
                )
                | (~Q(kind__in=["dicom_study", "dicom_study_deidentified"]) & Q(scan__isnull=True)),
                name="export_scan_iff_scan_kind",
            ),
            models.CheckConstraint(
                condition=Q(progress_percent__gte=0, progress_percent__lte=100), name="export_progress_0_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of {self.scope_label} ({self.status})"

    @property
    def scope_label(self) -> str:
        if self.subject is not None:
            return (
                f"scan #{self.scan_id} of subject {self.subject.code}"
                if self.scan_id
                else f"subject {self.subject.code}"
            )
        if self.site is not None:
            return f"site {self.site.code}"
        return f"trial {self.trial.protocol_number}"


class TokenEnd(models.TextChoices):
    """Why a token stopped working."""

    OWNER = "owner", "Revoked by its owner"
    ADMINISTRATOR = "administrator", "Revoked by an administrator"
    LOGOUT = "logout", "Logged out"
    PASSWORD_CHANGED = "password_changed", "The password was changed"
    EXPIRED = "expired", "Expired"
    IDLE = "idle", "Expired after a period without use"


class ApiToken(models.Model):
    """One API client's token. The key is ``<prefix>.<secret>``: ``prefix`` finds the row,
    and only the SHA-256 of the secret is kept, so the database never holds a usable key.
    ``password_stamp`` ties the token to the password it was issued under: a changed
    password ends it (``compliance.tokens``)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=16, choices=TokenScope.choices, default=TokenScope.FULL)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    password_stamp = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_reason = models.CharField(max_length=16, choices=TokenEnd.choices, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "revoked_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(scope__in=TokenScope.values), name="api_token_scope_valid"),
            models.CheckConstraint(
                condition=Q(revoked_at__isnull=True, revoked_reason="")
                | Q(revoked_at__isnull=False, revoked_reason__in=TokenEnd.values),
                name="api_token_revoked_with_reason",
            ),
            models.CheckConstraint(condition=Q(expires_at__gt=models.F("created_at")), name="api_token_expires_after"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… {self.name} ({self.scope}) of {self.user}"
