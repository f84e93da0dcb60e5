"""Live injection monitoring: a session streams a scanner's frames while cells are injected.

A session's life, in exactly these status words::

    open -> streaming -> ended     (the recording became an imaging Scan)
        \\           \\-> aborted   (reason: withdrawn consent, an operator, an unrecoverable error)
         \\-> aborted

Frames are recorded (``recording``, an MDF v2 file) before the bridge is answered, so
an acknowledged frame is never lost; ``frames_recorded`` is the next frame index the
server expects. The live worker reads the same frames from the transport, computes the
provisional region iron of every frame (``LiveMetric``) and raises ``LiveAlert`` rows;
``frames_processed`` and ``engine_state`` are its checkpoint, so a replaced worker
resumes where the last one stopped. Everything shown live is provisional: the recorded
scan's offline quantification is the authoritative number.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from imaging.models import Scan, Scanner, SystemMatrix
from trials.models import Injection, Subject


class LiveStatus(models.TextChoices):
    OPEN = "open", "Open"
    STREAMING = "streaming", "Streaming"
    ENDED = "ended", "Ended"
    ABORTED = "aborted", "Aborted"


FINAL_STATUSES = (LiveStatus.ENDED, LiveStatus.ABORTED)


class LiveSession(models.Model):
    Status = LiveStatus

    injection = models.ForeignKey(Injection, on_delete=models.PROTECT, related_name="live_sessions")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="live_sessions")
    scanner = models.ForeignKey(Scanner, on_delete=models.PROTECT, related_name="live_sessions")
    system_matrix = models.ForeignKey(
        SystemMatrix, null=True, blank=True, on_delete=models.PROTECT, related_name="live_sessions"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    status_reason = models.TextField(blank=True)
    # The stream header as accepted by ``start`` (protocol, dtype, started_at, source, fields;
    # payload and frequency_selection for a spectra stream).
    header = models.JSONField(null=True, blank=True)
    frame_shape = models.JSONField(null=True, blank=True)  # [J, C, V]; [J, C, K_sel] for spectra
    dtype = models.CharField(max_length=16, blank=True)  # "complex64" for a spectra stream
    frame_duration_s = models.FloatField(null=True, blank=True)
    frames_received = models.PositiveBigIntegerField(default=0)  # frames in answered messages, resends included
    frames_recorded = models.PositiveBigIntegerField(default=0)  # = the next frame index expected
    frames_dropped = models.PositiveBigIntegerField(default=0)  # display frames the live worker skipped
    recording = models.CharField(max_length=500, blank=True)  # MDF v2 file, relative to MEDIA_ROOT
    recording_chain = models.CharField(max_length=64, blank=True)  # last chained SHA-256 of recorded chunks
    chained_frames = models.PositiveBigIntegerField(default=0)  # frames whose bytes are in the chain
    scan = models.OneToOneField(Scan, null=True, blank=True, on_delete=models.PROTECT, related_name="live_session")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # The live worker's claim and checkpoint.
    worker_id = models.CharField(max_length=120, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    frames_processed = models.PositiveBigIntegerField(default=0)
    engine_state = models.BinaryField(null=True, blank=True)
    # The live engine's preparation (``live.worker.prepare_engine``: calibration rows, operator,
    # the subject's region functionals in the live cache): when it finished, or why it failed.
    engine_prepared_at = models.DateTimeField(null=True, blank=True)
    engine_preparation_error = models.TextField(blank=True)
    lag_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in LiveStatus]), name="live_session_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(frames_recorded__lte=models.F("frames_received")),
                name="live_session_recorded_le_received",
            ),
            models.CheckConstraint(
                condition=Q(scan__isnull=True) | Q(status=LiveStatus.ENDED), name="live_session_scan_only_when_ended"
            ),
        ]
        indexes = [models.Index(fields=["status", "lease_until"])]

    def __str__(self) -> str:
        return f"live session #{self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def trial(self):
        return self.subject.trial

    @property
    def engine_readiness(self) -> tuple[str, str]:
        """Whether the live engine is ready for the stream, as (state, sentence): "ready" (the
        first frame only loads it), "preparing", "waiting" (no system matrix before the stream's
        header) or "unavailable" (the preparation failed; the worker says why again). Frames are
        recorded in every state; live numbers start once the engine is ready."""
        if self.engine_prepared_at is not None:
            return "ready", "Live engine ready: the calibration's operator and the subject's regions are prepared."
        if self.engine_preparation_error:
            return "unavailable", f"Live engine not prepared: {self.engine_preparation_error}"
        if self.system_matrix_id is None:
            return "waiting", "Live engine waits for the stream's header: the calibration is matched then."
        return "preparing", (
            "Live engine preparing (the first session on a calibration builds its operator: about a minute "
            "for a 37^3 grid; later sessions load it in seconds). Frames sent meanwhile are recorded; "
            "live numbers follow once it is ready."
        )


class LiveAlertKind(models.TextChoices):
    OFF_TARGET_SHARE = "off_target_share", "Off-target share above the trial threshold"
    OFF_TARGET_DETECTED = "off_target_detected", "Off-target iron above its detection limit"
    TARGET_LOW = "target_low", "Target iron below the expected fraction of the dose"
    FRAME_GAP = "frame_gap", "Frames missing from the stream"
    LAG = "lag", "Live results later than the latency budget"
    SYSTEM_MATRIX_MISMATCH = "system_matrix_mismatch", "The stream does not match the calibration"


class LiveAlert(models.Model):
    Kind = LiveAlertKind

    session = models.ForeignKey(LiveSession, on_delete=models.PROTECT, related_name="alerts")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    frame = models.PositiveBigIntegerField(null=True, blank=True)
    acquired_at = models.FloatField(null=True, blank=True)  # unix seconds, as the bridge stamped the frame
    value_percent = models.FloatField(null=True, blank=True)
    threshold_percent = models.FloatField(null=True, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledgement_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["session", "created_at", "id"]
        constraints = [
            # One open (unacknowledged) alert of a kind per session: a sustained condition is one alert.
            models.UniqueConstraint(
                fields=["session", "kind"],
                condition=Q(acknowledged_at__isnull=True),
                name="live_alert_one_open_per_kind",
            ),
            models.CheckConstraint(
                condition=Q(acknowledged_at__isnull=True) | ~Q(acknowledgement_reason=""),
                name="live_alert_ack_has_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"live alert {self.kind} (session #{self.session_id}, frame {self.frame})"

    @property
    def trial(self):
        return self.session.subject.trial


class LiveMetric(models.Model):
    """The provisional region iron of one foreground frame, as published live."""

    session = models.ForeignKey(LiveSession, on_delete=models.CASCADE, related_name="metrics")
    frame = models.PositiveBigIntegerField()
    acquired_at = models.FloatField()
    published_at = models.FloatField()
    rois = models.JSONField()  # {"<name>": {"kind", "iron_ng", "uncertainty_ng"}}
    target_percent_of_injected = models.FloatField(null=True, blank=True)
    off_target_percent = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["session", "frame"]
        constraints = [models.UniqueConstraint(fields=["session", "frame"], name="live_metric_unique_per_frame")]

    def __str__(self) -> str:
        return f"live metric (session #{self.session_id}, frame {self.frame})"


class LiveMarkKind(models.TextChoices):
    INJECTION_START = "injection_start", "Injection started"
    INJECTION_PAUSE = "injection_pause", "Injection paused"
    INJECTION_RESUME = "injection_resume", "Injection resumed"
    INJECTION_STOP = "injection_stop", "Injection stopped"


class LiveMark(models.Model):
    """A mark a clinician entered during the session (``live.services.marks``): when the
    injection started, paused, resumed, stopped. ``at`` is the server's time when it was
    entered; ``frame`` the next frame index of the stream then (the session's
    ``frames_recorded``), None while the session was open and no frame had streamed."""

    Kind = LiveMarkKind

    session = models.ForeignKey(LiveSession, on_delete=models.PROTECT, related_name="marks")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    at = models.DateTimeField()
    frame = models.PositiveBigIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["session", "at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=[k.value for k in LiveMarkKind]), name="live_mark_kind_valid"),
            # Start and stop happen once per session (the service's order rules; this is the floor).
            models.UniqueConstraint(
                fields=["session", "kind"],
                condition=Q(kind__in=[LiveMarkKind.INJECTION_START, LiveMarkKind.INJECTION_STOP]),
                name="live_mark_start_stop_once",
            ),
        ]

    def __str__(self) -> str:
        return f"live mark {self.kind} (session #{self.session_id}, frame {self.frame})"

    @property
    def trial(self):
        return self.session.subject.trial
