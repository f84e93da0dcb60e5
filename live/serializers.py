"""Serializers of the live API: they only translate (the stream header and frames
messages are validated by ``live.stream_header`` and ``live.wire``, whose refusals have
codes of their own)."""

from __future__ import annotations

from rest_framework import serializers

from config.ids import IdField
from live.models import LiveMark, LiveSession
from live.worker import stream_frequency_selection


class LiveMarkOutput(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True)

    class Meta:
        model = LiveMark
        fields = ["id", "session", "kind", "at", "frame", "created_by", "note"]
        read_only_fields = fields


class LiveMarkInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=LiveMark.Kind.choices)
    note = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class LiveSessionOutput(serializers.ModelSerializer):
    next_frame = serializers.IntegerField(
        source="frames_recorded",
        read_only=True,
        help_text="The next frame index the server expects (= frames_recorded).",
    )
    site = serializers.IntegerField(source="subject.site_id", read_only=True)
    marks = LiveMarkOutput(many=True, read_only=True, help_text="Injection marks, in the order entered.")
    engine = serializers.SerializerMethodField(
        help_text='The live engine: "ready" (prepared: live numbers from the first frame), "preparing", '
        '"waiting" (no system matrix before the stream header) or "unavailable". Frames are recorded in every state.'
    )
    engine_detail = serializers.SerializerMethodField(help_text="The engine state in a sentence.")
    frequency_selection = serializers.SerializerMethodField(
        help_text='The frequencies a scanner that selects them itself sends (header payload "spectra"): '
        "1-based indices into the numSamplingPoints/2+1 rfft bins, sorted (the system matrix's rows that the "
        "live engine and the scan pipeline use); null while the session has no system matrix."
    )

    class Meta:
        model = LiveSession
        fields = [
            "id",
            "status",
            "status_reason",
            "injection",
            "subject",
            "site",
            "scanner",
            "system_matrix",
            "dtype",
            "frame_shape",
            "frame_duration_s",
            "frames_received",
            "frames_recorded",
            "next_frame",
            "frames_dropped",
            "lag_ms",
            "scan",
            "recording_chain",
            "created_at",
            "started_at",
            "ended_at",
            "marks",
            "engine",
            "engine_prepared_at",
            "engine_detail",
            "frequency_selection",
        ]

    def get_engine(self, obj: LiveSession) -> str:
        return obj.engine_readiness[0]

    def get_engine_detail(self, obj: LiveSession) -> str:
        return obj.engine_readiness[1]

    def get_frequency_selection(self, obj: LiveSession) -> list[int] | None:
        return stream_frequency_selection(obj.system_matrix)


class LiveSessionCreateInput(serializers.Serializer):
    injection = IdField()
    system_matrix = IdField(required=False, allow_null=True, help_text="Default: matched at start, as for uploads.")
    scanner = IdField(
        required=False,
        allow_null=True,
        help_text="Default: the system matrix's scanner, else the site's only scanner.",
    )


class StreamSourceInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["replay", "follow", "scanner"])
    filename = serializers.CharField()
    measurement_uuid = serializers.CharField(allow_null=True)


class StreamHeaderInput(serializers.Serializer):
    """The stream header (documentation of the body; ``live.stream_header`` validates it)."""

    protocol = serializers.CharField(help_text='"mpi-live/1"')
    dtype = serializers.ChoiceField(
        choices=["int16", "int32", "float32", "float64", "complex64"],
        help_text='little-endian; "complex64" for payload "spectra"',
    )
    payload = serializers.ChoiceField(
        choices=["samples", "spectra"],
        required=False,
        help_text='"samples" (default): time-domain samples; "spectra": the selected rfft bins of each period',
    )
    frequency_selection = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        help_text="spectra only: 1-based rfft bins carried (strictly increasing), as GET live-sessions/{id}/ gives",
    )
    started_at = serializers.FloatField(help_text="Unix seconds: the stream's start on the bridge's clock")
    source = StreamSourceInput()  # type: ignore[assignment]  # the header's key; Field.source is DRF's own
    fields = serializers.DictField(  # type: ignore[assignment]  # the header's key; Serializer.fields is DRF's own
        help_text="MDF v2 paths (/study/, /experiment/, /scanner/, /acquisition/, /tracer/) to JSON values"
    )


class FramesAnswer(serializers.Serializer):
    next_frame = serializers.IntegerField()
    frames_recorded = serializers.IntegerField()


class EndInput(serializers.Serializer):
    frames_sent = serializers.IntegerField(min_value=0, help_text="Frames the bridge sent (all of them answered).")
