"""Scanners, the system-matrix library, uploads, scans and what is derived from them.

A scan's life, in exactly these status words::

    received -> validating -> validated -> reconstructing -> reconstructed -> quantified
                          \\-> rejected (reason; the original bytes are kept)
    validating / reconstructing / reconstructed -> failed (reason, retryable or not)
    failed (retryable) -> validated or received again, by a retry

Every transition is a service call (``imaging/services/``) that writes its
SCAN_STATUS_CHANGED audit event in the same transaction. Invariants that the
database can hold are constraints here: one scan per (subject, file checksum), one
reconstruction per (scan, attempt), one measurement per (reconstruction, ROI), one
alert per (scan, kind).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from trials.models import Injection, NanoparticleLot, Site, Subject


class Topology(models.TextChoices):
    FFP = "FFP", "Field-free point"
    FFL = "FFL", "Field-free line"


class Scanner(models.Model):
    """One MPI scanner at one site, with its drive-field settings.

    ``dividers`` (one per drive channel, e.g. [102, 96]), ``drive_amplitudes_t`` (T)
    and ``gradient_t_per_m`` (diagonal, e.g. [-1, -1, 2]) are the nominal settings;
    the settings that decide whether a scan fits a system matrix are read from the
    files themselves.
    """

    Topology = Topology
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="scanners")
    name = models.CharField(max_length=120)
    manufacturer = models.CharField(max_length=120)
    model = models.CharField(max_length=120)
    topology = models.CharField(max_length=3, choices=Topology.choices, default=Topology.FFP)
    base_frequency_hz = models.FloatField()
    dividers = models.JSONField()
    drive_amplitudes_t = models.JSONField()
    gradient_t_per_m = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["site_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["site", "name"], name="scanner_name_unique_per_site"),
            models.CheckConstraint(condition=Q(topology__in=Topology.values), name="scanner_topology_valid"),
            models.CheckConstraint(condition=Q(base_frequency_hz__gt=0), name="scanner_base_frequency_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.manufacturer} {self.model})"

    @property
    def trial(self):
        return self.site.trial


class SystemMatrix(models.Model):
    """A calibration MDF registered in the library, with what was read from it."""

    scanner = models.ForeignKey(Scanner, on_delete=models.PROTECT, related_name="system_matrices")
    name = models.CharField(max_length=200)
    tracer_product = models.CharField(max_length=120)
    # Set when the calibration was measured with one nanoparticle lot and is valid for it only.
    nanoparticle_lot = models.ForeignKey(
        NanoparticleLot, null=True, blank=True, on_delete=models.PROTECT, related_name="system_matrices"
    )
    file = models.CharField(max_length=500)  # path relative to MEDIA_ROOT
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    validation_report = models.JSONField()
    grid_size = models.JSONField()  # [x, y, z]
    field_of_view_m = models.JSONField()
    field_of_view_center_m = models.JSONField()
    frequencies_count = models.PositiveIntegerField()
    receive_channels = models.PositiveIntegerField()
    snr_summary = models.JSONField()  # {"max", "median", "above_3", "above_5"}
    delta_concentration_mol_per_l = models.FloatField()
    # Drive-field settings as recorded in the calibration file: what scans are matched on.
    base_frequency_hz = models.FloatField()
    dividers = models.JSONField()
    drive_amplitudes_t = models.JSONField()
    active = models.BooleanField(default=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The resumable upload the file came through (API), if it came through one: an upload
    # is registered once.
    upload = models.OneToOneField(
        "Upload", null=True, blank=True, on_delete=models.PROTECT, related_name="system_matrix"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["scanner_id", "-created_at"]
        verbose_name_plural = "system matrices"
        constraints = [
            models.UniqueConstraint(fields=["scanner", "sha256"], name="system_matrix_file_unique_per_scanner"),
            models.CheckConstraint(
                condition=Q(active=True, retired_at__isnull=True) | Q(active=False, retired_at__isnull=False),
                name="system_matrix_retired_iff_inactive",
            ),
            models.CheckConstraint(
                condition=Q(delta_concentration_mol_per_l__gt=0), name="system_matrix_delta_concentration_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def describe(self) -> str:
        dividers = "/".join(str(d) for d in self.dividers)
        lot = f", lot {self.nanoparticle_lot.lot_number}" if self.nanoparticle_lot is not None else ""
        return f"#{self.pk} {self.name} (dividers {dividers}, tracer {self.tracer_product}{lot})"

    @property
    def trial(self):
        return self.scanner.site.trial


class UploadStatus(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    TERMINATED = "terminated", "Terminated"


class UploadKind(models.TextChoices):
    SCAN = "scan", "Scan"
    CALIBRATION = "calibration", "Calibration"


class Upload(models.Model):
    """One resumable (tus) upload: the file grows on disk until ``offset == length``.

    A ``scan`` upload names its subject, injection and time point and becomes a Scan when
    complete; a ``calibration`` upload names its scanner only, and its completed file waits
    to be registered as a SystemMatrix (``imaging.services.scanners``)."""

    Status = UploadStatus
    Kind = UploadKind
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SCAN)
    subject = models.ForeignKey(Subject, null=True, blank=True, on_delete=models.PROTECT, related_name="scan_uploads")
    injection = models.ForeignKey(
        Injection, null=True, blank=True, on_delete=models.PROTECT, related_name="scan_uploads"
    )
    scanner = models.ForeignKey(Scanner, on_delete=models.PROTECT, related_name="uploads")
    hours_after_injection = models.FloatField(null=True, blank=True)
    filename = models.CharField(max_length=255)
    length = models.PositiveBigIntegerField()
    offset = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)  # of the whole file, declared by the client
    path = models.CharField(max_length=500)  # relative to MEDIA_ROOT
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IN_PROGRESS)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(offset__lte=models.F("length")), name="upload_offset_within_length"),
            models.CheckConstraint(condition=Q(status__in=UploadStatus.values), name="upload_status_valid"),
            # A scan upload knows whose scan it is; a calibration upload belongs to no subject.
            models.CheckConstraint(
                condition=Q(
                    kind=UploadKind.SCAN,
                    subject__isnull=False,
                    injection__isnull=False,
                    hours_after_injection__isnull=False,
                )
                | Q(
                    kind=UploadKind.CALIBRATION,
                    subject__isnull=True,
                    injection__isnull=True,
                    hours_after_injection__isnull=True,
                ),
                name="upload_kind_fields",
            ),
        ]

    def __str__(self) -> str:
        return f"upload {self.pk} of {self.filename} ({self.status})"


class ScanStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    VALIDATING = "validating", "Validating"
    VALIDATED = "validated", "Validated"
    REJECTED = "rejected", "Rejected"
    RECONSTRUCTING = "reconstructing", "Reconstructing"
    RECONSTRUCTED = "reconstructed", "Reconstructed"
    QUANTIFIED = "quantified", "Quantified"
    FAILED = "failed", "Failed"


# The state machine: which status may follow which.
SCAN_TRANSITIONS: dict[str, frozenset[str]] = {
    ScanStatus.RECEIVED: frozenset({ScanStatus.VALIDATING}),
    ScanStatus.VALIDATING: frozenset({ScanStatus.VALIDATED, ScanStatus.REJECTED, ScanStatus.FAILED}),
    ScanStatus.VALIDATED: frozenset({ScanStatus.RECONSTRUCTING}),
    ScanStatus.RECONSTRUCTING: frozenset({ScanStatus.RECONSTRUCTED, ScanStatus.FAILED}),
    ScanStatus.RECONSTRUCTED: frozenset({ScanStatus.QUANTIFIED, ScanStatus.FAILED}),
    ScanStatus.QUANTIFIED: frozenset(),
    ScanStatus.REJECTED: frozenset(),
    ScanStatus.FAILED: frozenset({ScanStatus.RECEIVED, ScanStatus.VALIDATED}),
}


class Scan(models.Model):
    Status = ScanStatus
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="scans")
    injection = models.ForeignKey(Injection, on_delete=models.PROTECT, related_name="scans")
    scanner = models.ForeignKey(Scanner, on_delete=models.PROTECT, related_name="scans")
    upload = models.OneToOneField(Upload, null=True, blank=True, on_delete=models.PROTECT, related_name="scan")
    system_matrix = models.ForeignKey(
        SystemMatrix, null=True, blank=True, on_delete=models.PROTECT, related_name="scans"
    )
    hours_after_injection = models.FloatField()
    filename = models.CharField(max_length=255)
    file = models.CharField(max_length=500)  # the original bytes, relative to MEDIA_ROOT; never rewritten
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    status_reason = models.TextField(blank=True)
    retryable = models.BooleanField(default=False)
    validation_report = models.JSONField(null=True, blank=True)
    acquisition = models.JSONField(null=True, blank=True)  # drive-field settings read from the file
    metrics_summary = models.JSONField(null=True, blank=True)  # retention %, off-target %, totals
    progress_stage = models.CharField(max_length=32, blank=True)
    progress_percent = models.FloatField(default=0)
    # The claim: which task owns the current step, and which attempt it is.
    attempt = models.PositiveIntegerField(default=0)
    claim_token = models.CharField(max_length=64, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["subject_id", "hours_after_injection", "id"]
        constraints = [
            # A rejected scan does not count: its rejection tells the site to upload the file again.
            models.UniqueConstraint(
                fields=["subject", "sha256"], condition=~Q(status="rejected"), name="scan_file_unique_per_subject"
            ),
            models.CheckConstraint(condition=Q(status__in=ScanStatus.values), name="scan_status_valid"),
            models.CheckConstraint(condition=Q(hours_after_injection__gte=0), name="scan_hours_not_negative"),
            models.CheckConstraint(
                condition=Q(progress_percent__gte=0, progress_percent__lte=100), name="scan_progress_0_100"
            ),
        ]
        indexes = [models.Index(fields=["status"]), models.Index(fields=["subject", "hours_after_injection"])]

    def __str__(self) -> str:
        return f"scan #{self.pk} of subject #{self.subject_id} at {self.hours_after_injection:g} h"

    @property
    def trial(self):
        return self.subject.trial


class Reconstruction(models.Model):
    """The result of one reconstruction attempt, with everything needed to reproduce it."""

    scan = models.ForeignKey(Scan, on_delete=models.PROTECT, related_name="reconstructions")
    attempt = models.PositiveIntegerField()
    system_matrix = models.ForeignKey(SystemMatrix, on_delete=models.PROTECT, related_name="reconstructions")
    system_matrix_sha256 = models.CharField(max_length=64)
    input_sha256 = models.CharField(max_length=64)
    params = models.JSONField()  # ReconParams.as_dict()
    software_version = models.JSONField()  # {"recon": ..., "platform": ..., "numpy": ...}
    file = models.CharField(max_length=500)  # reconstruction MDF, relative to MEDIA_ROOT
    sha256 = models.CharField(max_length=64)
    summary = models.JSONField(default=dict)  # lambda, rows used, notes, timings
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["scan_id", "attempt"]
        constraints = [models.UniqueConstraint(fields=["scan", "attempt"], name="reconstruction_unique_per_attempt")]

    def __str__(self) -> str:
        return f"reconstruction {self.attempt} of scan #{self.scan_id}"


class RoiKind(models.TextChoices):
    TARGET = "target", "Injection target"
    LUNGS = "lungs", "Lungs"
    LIVER = "liver", "Liver"
    SPLEEN = "spleen", "Spleen"
    OTHER = "other", "Other"


OFF_TARGET_KINDS = (RoiKind.LUNGS, RoiKind.LIVER, RoiKind.SPLEEN, RoiKind.OTHER)


class RegionOfInterest(models.Model):
    """A region of a subject (every scan of theirs) or of one scan (overrides the subject's).

    Either ``geometry`` ({"shape": "sphere"|"ellipsoid"|"box", "center_m": [x, y, z],
    "radius_m" | "semi_axes_m" | "half_size_m"}, scanner coordinates in metres), or a
    label volume file (``label_file``, an int array shaped like the reconstruction grid)
    and the ``label_value`` that marks this region in it.
    """

    Kind = RoiKind
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="regions_of_interest")
    scan = models.ForeignKey(Scan, null=True, blank=True, on_delete=models.PROTECT, related_name="regions_of_interest")
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    geometry = models.JSONField(null=True, blank=True)
    label_file = models.CharField(max_length=500, blank=True)
    label_value = models.IntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["subject_id", "scan_id", "kind", "name"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=RoiKind.values), name="roi_kind_valid"),
            models.CheckConstraint(
                condition=(Q(geometry__isnull=False) & Q(label_file="") & Q(label_value__isnull=True))
                | (Q(geometry__isnull=True) & ~Q(label_file="") & Q(label_value__isnull=False)),
                name="roi_geometry_xor_label_volume",
            ),
            models.UniqueConstraint(
                fields=["subject", "name"], condition=Q(scan__isnull=True), name="roi_name_unique_per_subject"
            ),
            models.UniqueConstraint(
                fields=["scan", "name"], condition=Q(scan__isnull=False), name="roi_name_unique_per_scan"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def trial(self):
        return self.subject.trial


class Measurement(models.Model):
    """Per reconstruction and ROI: iron, cells, retention and off-target share."""

    reconstruction = models.ForeignKey(Reconstruction, on_delete=models.PROTECT, related_name="measurements")
    scan = models.ForeignKey(Scan, on_delete=models.PROTECT, related_name="measurements")
    roi = models.ForeignKey(RegionOfInterest, on_delete=models.PROTECT, related_name="measurements")
    roi_name = models.CharField(max_length=120)
    roi_kind = models.CharField(max_length=16, choices=RoiKind.choices)
    iron_ng = models.FloatField()
    uncertainty_ng = models.FloatField()
    cell_count = models.FloatField()
    retention_percent = models.FloatField()  # of the scan's own injected iron
    # 1 SD of retention_percent, against the same injection: the error bar the pages and
    # reports draw. Stored at quantification time (recon.quantify computes both), null
    # only where migration 0005 could not recover it for an older row.
    retention_uncertainty_percent = models.FloatField(null=True)
    off_target_percent = models.FloatField(null=True)  # share of detected iron; off-target ROIs only
    detection_limit_ng = models.FloatField()
    detected = models.BooleanField()
    voxels = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["scan_id", "roi_kind", "roi_name"]
        constraints = [
            models.UniqueConstraint(fields=["reconstruction", "roi"], name="measurement_unique_per_roi"),
            models.CheckConstraint(condition=Q(uncertainty_ng__gte=0), name="measurement_uncertainty_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.roi_name} of scan #{self.scan_id}"

    @property
    def trial(self):
        return self.scan.subject.trial


class AlertKind(models.TextChoices):
    OFF_TARGET = "off_target", "Off-target accumulation"


class Alert(models.Model):
    Kind = AlertKind
    scan = models.ForeignKey(Scan, on_delete=models.PROTECT, related_name="alerts")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="imaging_alerts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    value_percent = models.FloatField()
    threshold_percent = models.FloatField()
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["scan", "kind"], name="alert_unique_per_scan_kind")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} alert on scan #{self.scan_id}"

    @property
    def trial(self):
        return self.subject.trial


# --------------------------------------------------------------------------- PACS delivery


class PacsProtocol(models.TextChoices):
    DICOM = "dicom", "DICOM C-STORE"
    DICOMWEB = "dicomweb", "DICOMweb STOW-RS"


class PacsDestination(models.Model):
    """A PACS of one trial that scans' DICOM studies can be sent to.

    C-STORE needs ``host``, ``port``, ``called_ae`` (and sends as ``calling_ae``);
    STOW-RS needs ``base_url`` (the DICOMweb root, ``{base_url}/studies`` is posted to)
    and, for basic auth, ``username`` and ``password_env``: the NAME of the environment
    variable that holds the password on the workers. The password itself is never stored.
    ``deidentify``: every study sent here is de-identified first (PS3.15 Annex E).
    """

    Protocol = PacsProtocol
    trial = models.ForeignKey("trials.Trial", on_delete=models.PROTECT, related_name="pacs_destinations")
    name = models.CharField(max_length=120)
    protocol = models.CharField(max_length=8, choices=Protocol.choices)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    called_ae = models.CharField(max_length=16, blank=True)
    calling_ae = models.CharField(max_length=16, default="MPITRIALS")
    base_url = models.URLField(max_length=500, blank=True)
    username = models.CharField(max_length=150, blank=True)
    password_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable that holds the password (never the password)",
    )
    deidentify = models.BooleanField(default=True)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trial_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "name"], name="pacs_destination_name_unique_per_trial"),
            models.CheckConstraint(condition=Q(protocol__in=PacsProtocol.values), name="pacs_protocol_valid"),
            models.CheckConstraint(
                condition=Q(protocol="dicomweb", base_url__gt="")
                | (Q(protocol="dicom", host__gt="", port__isnull=False, called_ae__gt="")),
                name="pacs_destination_complete_for_protocol",
            ),
            models.CheckConstraint(condition=Q(password_env="") | ~Q(username=""), name="pacs_password_needs_username"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.describe()})"

    def describe(self) -> str:
        if self.protocol == PacsProtocol.DICOM:
            return f"C-STORE {self.called_ae}@{self.host}:{self.port}"
        return f"STOW-RS {self.base_url}"


class DicomSendStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class DicomSend(models.Model):
    """One delivery of a scan's study to a PACS destination, done by a task on ``export``.

    ``object_statuses``: one entry per DICOM object sent, ``{"sop_class_uid", "sop_instance_uid",
    "ok", "status", "detail"}`` (the PACS's answer). ``deidentified`` is what was sent
    (copied from the destination at request time). ``attempts``: deliveries tried so far
    (a transient failure queues the row again, up to IMAGING_SEND_MAX_RETRIES retries);
    ``last_error``: the latest attempt's failure, ``error`` the final one."""

    Status = DicomSendStatus
    scan = models.ForeignKey(Scan, on_delete=models.PROTECT, related_name="dicom_sends")
    destination = models.ForeignKey(PacsDestination, on_delete=models.PROTECT, related_name="sends")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    deidentified = models.BooleanField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    progress_stage = models.CharField(max_length=32, blank=True)
    progress_percent = models.FloatField(default=0)
    object_statuses = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=DicomSendStatus.values), name="dicom_send_status_valid"),
            models.CheckConstraint(
                condition=Q(progress_percent__gte=0, progress_percent__lte=100), name="dicom_send_progress_0_100"
            ),
        ]

    def __str__(self) -> str:
        return f"scan #{self.scan_id} -> {self.destination.name} ({self.status})"

    @property
    def trial(self):
        return self.scan.subject.trial
