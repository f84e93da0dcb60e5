"""Serializers that only translate: no rule lives here."""

from __future__ import annotations

from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers
from rest_framework.reverse import reverse

from config.ids import IdField
from imaging.models import Alert, DicomSend, Measurement, RegionOfInterest, RoiKind, Scan, Scanner, SystemMatrix


class ScannerOutput(serializers.ModelSerializer):
    class Meta:
        model = Scanner
        fields = [
            "id",
            "site",
            "name",
            "manufacturer",
            "model",
            "topology",
            "base_frequency_hz",
            "dividers",
            "drive_amplitudes_t",
            "gradient_t_per_m",
            "created_at",
        ]


class SystemMatrixOutput(serializers.ModelSerializer):
    class Meta:
        model = SystemMatrix
        fields = [
            "id",
            "scanner",
            "name",
            "tracer_product",
            "nanoparticle_lot",
            "sha256",
            "size_bytes",
            "validation_report",
            "grid_size",
            "field_of_view_m",
            "field_of_view_center_m",
            "frequencies_count",
            "receive_channels",
            "snr_summary",
            "delta_concentration_mol_per_l",
            "base_frequency_hz",
            "dividers",
            "drive_amplitudes_t",
            "active",
            "retired_at",
            "created_at",
        ]


class MeasurementOutput(serializers.ModelSerializer):
    class Meta:
        model = Measurement
        fields = [
            "id",
            "scan",
            "reconstruction",
            "roi",
            "roi_name",
            "roi_kind",
            "iron_ng",
            "uncertainty_ng",
            "cell_count",
            "retention_percent",
            "retention_uncertainty_percent",
            "off_target_percent",
            "detection_limit_ng",
            "detected",
            "voxels",
        ]


class ScanOutput(serializers.ModelSerializer):
    site = serializers.IntegerField(source="subject.site_id", read_only=True)
    subject_code = serializers.CharField(source="subject.code", read_only=True)
    progress = serializers.SerializerMethodField()
    metrics = MeasurementOutput(source="measurements", many=True, read_only=True)
    files = serializers.SerializerMethodField()

    class Meta:
        model = Scan
        fields = [
            "id",
            "subject",
            "subject_code",
            "site",
            "injection",
            "scanner",
            "system_matrix",
            "hours_after_injection",
            "filename",
            "size_bytes",
            "sha256",
            "status",
            "status_reason",
            "retryable",
            "progress",
            "attempt",
            "validation_report",
            "acquisition",
            "metrics_summary",
            "metrics",
            "files",
            "created_at",
            "updated_at",
        ]

    def get_progress(self, scan) -> dict:
        return {"stage": scan.progress_stage or scan.status, "percent": scan.progress_percent}

    def get_files(self, scan) -> dict:
        request = self.context.get("request")
        files = {"original": reverse("scan-original", args=[scan.pk], request=request)}
        if scan.status in (Scan.Status.RECONSTRUCTED, Scan.Status.QUANTIFIED):
            files["reconstruction"] = reverse("scan-reconstruction-file", args=[scan.pk], request=request)
        return files


class RoiOutput(serializers.ModelSerializer):
    class Meta:
        model = RegionOfInterest
        fields = ["id", "subject", "scan", "name", "kind", "geometry", "label_value", "created_at"]


class RoiInput(serializers.Serializer):
    subject = serializers.IntegerField()
    scan = serializers.IntegerField(required=False, allow_null=True)
    name = serializers.CharField(max_length=120)
    kind = serializers.ChoiceField(choices=RoiKind.choices)
    geometry = serializers.JSONField(required=False, allow_null=True)
    label_volume = serializers.FileField(required=False, allow_null=True)
    label_value = serializers.IntegerField(required=False, allow_null=True)


class RoiJsonInput(RoiInput):
    """RoiInput as JSON can carry it: a label volume is a file, sent as multipart/form-data."""

    label_volume = None  # type: ignore[assignment]  # DRF drops a field declared None


class RoiFormInput(RoiInput):
    """RoiInput as a form can carry it: a form has no null (leave the field out)."""

    scan = serializers.IntegerField(required=False)
    label_volume = serializers.FileField(required=False)
    label_value = serializers.IntegerField(required=False)


class AlertOutput(serializers.ModelSerializer):
    class Meta:
        model = Alert
        fields = ["id", "scan", "subject", "kind", "value_percent", "threshold_percent", "message", "created_at"]


class TimeCoursePoint(serializers.Serializer):
    hours = serializers.FloatField()
    iron_ng = serializers.FloatField()
    uncertainty_ng = serializers.FloatField()
    retention_percent = serializers.FloatField()
    retention_uncertainty_percent = serializers.FloatField(allow_null=True)
    off_target_percent = serializers.FloatField(allow_null=True)
    detected = serializers.BooleanField()
    scan_id = serializers.IntegerField()


class TimeCourseSeries(serializers.Serializer):
    roi_kind = serializers.CharField()
    roi_name = serializers.CharField()
    points = TimeCoursePoint(many=True)


class TimeCourseOutput(serializers.Serializer):
    subject = serializers.IntegerField()
    subject_code = serializers.CharField()
    injected_iron_ng = serializers.FloatField(allow_null=True)
    series = TimeCourseSeries(many=True)


class SponsorTimeCourseOutput(serializers.Serializer):
    """What a sponsor reads (compliance.sponsor.time_course): the pseudonym, not the code."""

    subject = serializers.IntegerField()
    pseudonym = serializers.CharField()
    injected_iron_ng = serializers.FloatField(allow_null=True)
    series = TimeCourseSeries(many=True)


TIME_COURSE_RESPONSE = PolymorphicProxySerializer(
    component_name="TimeCourseOutputOrSponsorTimeCourseOutput",
    serializers=[TimeCourseOutput, SponsorTimeCourseOutput],
    resource_type_field_name=None,
)


class DicomSendInput(serializers.Serializer):
    destination = serializers.IntegerField(help_text="Id of an active PACS destination of the scan's trial")


class DicomSendOutput(serializers.ModelSerializer):
    destination_name = serializers.CharField(source="destination.name", read_only=True)
    protocol = serializers.CharField(source="destination.protocol", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True, default="")

    class Meta:
        model = DicomSend
        fields = [
            "id",
            "scan",
            "destination",
            "destination_name",
            "protocol",
            "deidentified",
            "requested_by",
            "status",
            "progress_stage",
            "progress_percent",
            "object_statuses",
            "error",
            "attempts",
            "last_error",
            "created_at",
            "started_at",
            "finished_at",
        ]


class CalibrationUploadMetadataInput(serializers.Serializer):
    """The decoded tus Upload-Metadata of a calibration upload (``kind calibration``)."""

    scanner = IdField()
    sha256 = serializers.CharField()
    filename = serializers.CharField()


class SystemMatrixRegisterInput(serializers.Serializer):
    """Register the file of a completed calibration upload in its scanner's library."""

    upload = serializers.UUIDField(help_text="Id of a completed resumable upload started with kind calibration.")
    scanner = IdField(help_text="The scanner the upload was started for.")
    name = serializers.CharField(max_length=200)
    tracer_product = serializers.CharField(
        max_length=120, help_text="The tracer product, as on the nanoparticle lots it quantifies."
    )
    nanoparticle_lot = IdField(
        required=False, allow_null=True, help_text="Only when the calibration is valid for this one lot."
    )


class UploadMetadataInput(serializers.Serializer):
    """The decoded tus Upload-Metadata of a new upload (its ids and numbers; a FloatField
    refuses NaN and infinities)."""

    subject = IdField()
    injection = IdField()
    scanner = IdField()
    hours = serializers.FloatField()
    sha256 = serializers.CharField()
    filename = serializers.CharField()


class ScanRefileInput(serializers.Serializer):
    """Where a scan uploaded against the wrong subject or time point belongs."""

    subject = serializers.IntegerField(help_text="The subject the scan belongs to (same site as the scan).")
    injection = serializers.IntegerField(help_text="That subject's injection the scan follows.")
    hours = serializers.FloatField(min_value=0, help_text="Hours after that injection.")
    reason = serializers.CharField(
        help_text="Why the scan is re-filed; kept in the audit trail with the old and new filing."
    )
