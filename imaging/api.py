"""REST endpoints of the scan pipeline. Each method: scope through a selector,
translate the input, call one service, translate the output. Objects outside the
user's sites are not in the queryset, so detail routes answer 404 for them.

Uploads speak tus 1.0.0 (see ``imaging/uploads.py`` for the protocol as implemented).
A sponsor's projections are attached at start-up by compliance.sponsor
(``config.viewsets.VIEW_OUTPUTS``); a scan's DICOM exports, under /scans/{id}/, are
compliance's endpoint.
"""

from __future__ import annotations

import django_filters
from django.db import transaction
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser, FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import RuleViolation
from config.ids import ID_SCHEMA, IdFilter, parse_id
from config.request_body import RequestBody
from config.token_scopes import TokenScope
from config.viewsets import ScopedViewSet, SponsorAware
from imaging import pacs, selectors, tasks, uploads
from imaging import serializers as s
from imaging.models import Alert, DicomSend, Measurement, PacsDestination, RegionOfInterest, Scan, Scanner, SystemMatrix
from imaging.services.downloads import file_download_record
from imaging.services.rois import roi_define
from imaging.services.scan_claims import scan_retry
from imaging.services.scan_refile import scan_refile
from imaging.services.scan_uploads import (
    CalibrationUploadRequest,
    UploadRequest,
    calibration_upload_create,
    upload_append,
    upload_create,
    upload_terminate,
)
from imaging.services.scanners import system_matrix_register_from_upload, system_matrix_retire
from trials.filters import IdFilterSet
from trials.selectors import lots_visible_to, subjects_visible_to
from trials.serializers import ReasonInput

UPLOAD_DESCRIPTION = uploads.__doc__


# --------------------------------------------------------------------------- tus uploads


class RawBodyParser(BaseParser):
    """Accepts the tus media type; the view streams the body itself, so this never reads it."""

    media_type = "application/offset+octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover - never called
        raise RuntimeError("the upload body is streamed by the view, never parsed")


class TusMixin(APIView):
    """Tus-Resumable on every response; 412 for a request that names another version."""

    parser_classes = [RawBodyParser, JSONParser]
    # Scanner-bridge tokens reach the upload endpoints and nothing else.
    token_scopes = frozenset({TokenScope.SCANNER})

    def check_tus_version(self, request) -> None:
        version = request.headers.get("Tus-Resumable")
        if version != uploads.TUS_VERSION:
            raise RuleViolation(
                "tus_version",
                f"Tus-Resumable {version!r} is not supported: use {uploads.TUS_VERSION}.",
            )

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Tus-Resumable"] = uploads.TUS_VERSION
        if response.status_code == uploads.CHECKSUM_MISMATCH:
            response.reason_phrase = "Checksum Mismatch"
        if request.method == "OPTIONS" or response.status_code == 412:
            response["Tus-Version"] = uploads.TUS_VERSION
        return response


def _int_header(request, name: str) -> int:
    raw = request.headers.get(name)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise RuleViolation(
            "invalid_header", f"{name} must be a non-negative integer, got {raw!r}.", field=name
        ) from None
    if value < 0:
        raise RuleViolation("invalid_header", f"{name} must be a non-negative integer, got {raw!r}.", field=name)
    return value


def _require_metadata(meta: dict[str, str], keys: tuple[str, ...], what: str) -> None:
    missing = [key for key in keys if not meta.get(key)]
    if missing:
        raise RuleViolation(
            "missing_metadata",
            f"Upload-Metadata of {what} lacks {', '.join(missing)} (needs {', '.join(keys)}).",
            field="Upload-Metadata",
        )


def _metadata_request(request) -> UploadRequest | CalibrationUploadRequest:
    meta = uploads.parse_metadata(request.headers.get("Upload-Metadata"))
    kind = meta.get("kind") or "scan"
    if kind not in uploads.UPLOAD_KINDS:
        raise RuleViolation(
            "invalid_metadata",
            f"Upload-Metadata kind {kind!r} is not one of {', '.join(uploads.UPLOAD_KINDS)}.",
            field="Upload-Metadata",
        )
    if kind == "calibration":
        _require_metadata(meta, uploads.CALIBRATION_METADATA_KEYS, "a calibration")
        calibration = s.CalibrationUploadMetadataInput(data=meta)
        calibration.is_valid(raise_exception=True)
        fields = calibration.validated_data
        return CalibrationUploadRequest(
            scanner=get_object_or_404(selectors.scanners_visible_to(request.user), pk=fields["scanner"]),
            sha256=fields["sha256"],
            filename=fields["filename"],
            length=_int_header(request, "Upload-Length"),
        )
    _require_metadata(meta, uploads.METADATA_KEYS, "a scan")
    data = s.UploadMetadataInput(data=meta)
    data.is_valid(raise_exception=True)
    values = data.validated_data
    subject = get_object_or_404(subjects_visible_to(request.user), pk=values["subject"])
    return UploadRequest(
        subject=subject,
        injection_id=values["injection"],
        scanner_id=values["scanner"],
        hours_after_injection=values["hours"],
        sha256=values["sha256"],
        filename=values["filename"],
        length=_int_header(request, "Upload-Length"),
    )


@extend_schema(tags=["uploads"], description=UPLOAD_DESCRIPTION)
class UploadCollectionApi(TusMixin, APIView):
    @extend_schema(
        request=None,
        responses={201: None},
        summary="tus creation: start a resumable scan upload (or, with Upload-Metadata kind calibration, "
        "a calibration's)",
    )
    def post(self, request):
        self.check_tus_version(request)
        wanted = _metadata_request(request)
        if isinstance(wanted, CalibrationUploadRequest):
            upload = calibration_upload_create(actor=request.user, request=wanted)
        else:
            upload = upload_create(actor=request.user, request=wanted)
        response = Response(status=status.HTTP_201_CREATED)
        response["Location"] = request.build_absolute_uri(f"{request.path.rstrip('/')}/{upload.pk}/")
        response["Upload-Offset"] = "0"
        return response

    @extend_schema(request=None, responses={204: None}, summary="tus discovery")
    def options(self, request, *args, **kwargs):
        from django.conf import settings

        response = Response(status=status.HTTP_204_NO_CONTENT)
        response["Tus-Extension"] = uploads.TUS_EXTENSIONS
        response["Tus-Max-Size"] = str(settings.IMAGING_UPLOAD_MAX_BYTES)
        response["Tus-Checksum-Algorithm"] = uploads.TUS_CHECKSUM_ALGORITHMS
        return response


@extend_schema(tags=["uploads"], description=UPLOAD_DESCRIPTION)
class UploadResourceViewSet(TusMixin, viewsets.GenericViewSet):
    """One upload: HEAD (offset), PATCH (append), DELETE (terminate). The object is
    looked up through the selector before anything else, so another site gets 404."""

    selector = staticmethod(selectors.uploads_visible_to)

    def get_queryset(self):
        return selectors.uploads_visible_to(self.request.user)

    @extend_schema(request=None, responses={200: None}, summary="tus: the upload's offset")
    def offset(self, request, pk=None):
        upload = self.get_object()
        self.check_tus_version(request)
        if upload.status == upload.Status.TERMINATED:
            raise Http404
        response = Response(status=status.HTTP_200_OK)
        response["Upload-Offset"] = str(upload.offset)
        response["Upload-Length"] = str(upload.length)
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(
        request={uploads.OFFSET_CONTENT_TYPE: bytes},
        responses={204: None, 460: None},
        summary="tus: append a chunk (Upload-Checksum: sha256 <base64>)",
    )
    def append(self, request, pk=None):
        upload = self.get_object()
        self.check_tus_version(request)
        if request.content_type.split(";")[0].strip() != uploads.OFFSET_CONTENT_TYPE:
            raise RuleViolation("unsupported_media_type", f"PATCH needs Content-Type {uploads.OFFSET_CONTENT_TYPE}.")
        offset = _int_header(request, "Upload-Offset")
        checksum = uploads.parse_checksum(request.headers.get("Upload-Checksum"))
        # The new scan's first task is recorded in the transaction that creates it (the outbox):
        # with the broker away, the upload still completes and answers with its scan id.
        outcome = upload_append(
            actor=request.user,
            upload=upload,
            offset=offset,
            source=RequestBody(request._request),
            checksum=checksum,
            then=tasks.queue_next_step,
        )
        if not outcome.checksum_ok:
            raise RuleViolation(
                "checksum_mismatch",
                "The chunk's sha256 does not match Upload-Checksum: it was "
                f"discarded; resume at offset {outcome.upload.offset}.",
            )
        response = Response(status=status.HTTP_204_NO_CONTENT)
        response["Upload-Offset"] = str(outcome.upload.offset)
        if outcome.scan is not None:
            response["Scan-Id"] = str(outcome.scan.pk)
            response["Scan-Location"] = request.build_absolute_uri(f"/api/v1/scans/{outcome.scan.pk}/")
        return response

    @extend_schema(request=None, responses={204: None}, summary="tus termination: abandon the upload")
    def terminate(self, request, pk=None):
        upload = self.get_object()
        self.check_tus_version(request)
        upload_terminate(actor=request.user, upload=upload)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------- scans


@extend_schema_field({"type": "number", "maximum": 1e50})
class _HoursFilter(django_filters.NumberFilter):
    """As documented: django-filter refuses a number over 1e50."""


class ScanFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Scan.Status.choices)
    subject = IdFilter(field_name="subject_id")
    site = IdFilter(field_name="subject__site_id")
    hours = _HoursFilter(field_name="hours_after_injection")

    class Meta:
        model = Scan
        fields = ["status", "subject", "site", "hours"]


def _file_response(path, filename):
    try:
        handle = open(uploads.media_path(path), "rb")  # noqa: SIM115 - FileResponse closes it
    except FileNotFoundError:
        raise Http404 from None
    return FileResponse(handle, as_attachment=True, filename=filename, content_type="application/x-hdf5")


class ScanViewSet(ScopedViewSet):
    selector = selectors.scans_visible_to
    serializer_class = s.ScanOutput
    filterset_class = ScanFilter
    ordering_fields = ["hours_after_injection", "created_at", "status"]

    @extend_schema(responses=s.MeasurementOutput(many=True), summary="Per-ROI metrics of the scan")
    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        scan = self.get_object()
        return Response(s.MeasurementOutput(scan.measurements.all(), many=True).data)

    @extend_schema(responses={(200, "application/x-hdf5"): bytes}, summary="Download the original MDF (audited)")
    @action(detail=True, methods=["get"], url_path="original", url_name="original")
    def original(self, request, pk=None):
        scan = self.get_object()
        file_download_record(actor=request.user, scan=scan, which="original", path=scan.file)
        return _file_response(scan.file, scan.filename)

    @extend_schema(
        responses={(200, "application/x-hdf5"): bytes}, summary="Download the newest reconstruction MDF (audited)"
    )
    @action(detail=True, methods=["get"], url_path="reconstruction-file", url_name="reconstruction-file")
    def reconstruction_file(self, request, pk=None):
        scan = self.get_object()
        reconstruction = scan.reconstructions.order_by("-attempt").first()
        if reconstruction is None:
            raise Http404
        file_download_record(actor=request.user, scan=scan, which="reconstruction", path=reconstruction.file)
        return _file_response(reconstruction.file, f"scan{scan.pk}-reconstruction.mdf")

    @extend_schema(methods=["get"], responses=s.DicomSendOutput(many=True), summary="PACS deliveries of the scan")
    @extend_schema(
        methods=["post"],
        request=s.DicomSendInput,
        responses={201: s.DicomSendOutput},
        summary="Send the scan's DICOM study to a PACS destination (task on the export queue)",
    )
    @action(detail=True, methods=["get", "post"], url_path="dicom-sends", url_name="dicom-sends")
    def dicom_sends(self, request, pk=None):
        scan = self.get_object()
        if request.method == "GET":
            return Response(
                s.DicomSendOutput(selectors.dicom_sends_visible_to(request.user).filter(scan=scan), many=True).data
            )
        data = s.DicomSendInput(data=request.data)
        data.is_valid(raise_exception=True)
        destination = PacsDestination.objects.filter(pk=data.validated_data["destination"]).first()
        if destination is None:
            raise RuleViolation("not_found", "No such PACS destination.", field="destination")
        with transaction.atomic():  # the send and its task, together
            send = pacs.dicom_send_request(actor=request.user, scan=scan, destination=destination)
            tasks.queue_send(send)
        return Response(s.DicomSendOutput(send).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=s.ScanOutput, summary="Retry a scan that failed for a transient reason")
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        with transaction.atomic():  # the retry and its task, together
            scan = scan_retry(actor=request.user, scan=self.get_object())
            tasks.queue_next_step(scan)
        return Response(s.ScanOutput(self.get_queryset().get(pk=scan.pk), context={"request": request}).data)

    @extend_schema(
        request=s.ScanRefileInput,
        responses=s.ScanOutput,
        summary="Re-file a scan uploaded against the wrong subject or time point (audited, with a reason)",
    )
    @action(detail=True, methods=["post"])
    def refile(self, request, pk=None):
        scan = self.get_object()
        data = self.validated(s.ScanRefileInput)
        subject = get_object_or_404(subjects_visible_to(request.user), pk=data["subject"])
        scan = scan_refile(
            actor=request.user,
            scan=scan,
            subject=subject,
            injection_id=data["injection"],
            hours_after_injection=data["hours"],
            reason=data["reason"],
            then=tasks.queue_next_step,
        )
        return Response(s.ScanOutput(self.get_queryset().get(pk=scan.pk), context={"request": request}).data)


def _id_filters(model_, names):
    """A FilterSet whose foreign keys filter by plain id (as trials.filters.IdFilterSet):
    django-filter's default looks an id up among all rows, so another site's id answered
    200 (empty) and an unknown id 400, telling which ids exist."""
    return type(
        f"{model_.__name__}Filter",
        (IdFilterSet,),
        {"Meta": type("Meta", (IdFilterSet.Meta,), {"model": model_, "fields": names})},
    )


class ScannerViewSet(ScopedViewSet):
    selector = selectors.scanners_visible_to
    serializer_class = s.ScannerOutput
    filterset_class = _id_filters(Scanner, ["site"])


class SystemMatrixViewSet(ScopedViewSet):
    selector = selectors.system_matrices_visible_to
    serializer_class = s.SystemMatrixOutput
    filterset_class = _id_filters(SystemMatrix, ["scanner", "active"])

    @extend_schema(
        request=s.SystemMatrixRegisterInput,
        responses={201: s.SystemMatrixOutput},
        summary="Register a calibration from a completed resumable upload (Upload-Metadata kind calibration): "
        "validated, summarised and added to the scanner's library",
    )
    def create(self, request):
        data = self.validated(s.SystemMatrixRegisterInput)
        # Another site's scanner or upload is not there for this user: 404.
        scanner = get_object_or_404(selectors.scanners_visible_to(request.user), pk=data["scanner"])
        upload = get_object_or_404(selectors.uploads_visible_to(request.user), pk=data["upload"])
        lot = None
        if data.get("nanoparticle_lot") is not None:
            lot = lots_visible_to(request.user).filter(pk=data["nanoparticle_lot"]).first()
            if lot is None:
                raise RuleViolation("not_found", "No such nanoparticle lot.", field="nanoparticle_lot")
        system_matrix = system_matrix_register_from_upload(
            actor=request.user,
            upload=upload,
            scanner=scanner,
            name=data["name"],
            tracer_product=data["tracer_product"],
            nanoparticle_lot=lot,
        )
        return self.output(self.refetched(system_matrix), status.HTTP_201_CREATED)

    @extend_schema(
        request=ReasonInput,
        responses=s.SystemMatrixOutput,
        summary="Retire a calibration (with a reason): new uploads no longer match it; scans already "
        "reconstructed with it keep it",
    )
    @action(detail=True, methods=["post"])
    def retire(self, request, pk=None):
        system_matrix = self.get_object()  # another site's calibration is a 404 whatever the body
        reason = self.validated(ReasonInput)["reason"]
        system_matrix = system_matrix_retire(actor=request.user, system_matrix=system_matrix, reason=reason)
        return self.output(system_matrix)


class MeasurementViewSet(ScopedViewSet):
    selector = selectors.measurements_visible_to
    serializer_class = s.MeasurementOutput
    filterset_class = _id_filters(Measurement, ["scan", "roi_kind", "detected"])


class AlertViewSet(ScopedViewSet):
    selector = selectors.alerts_visible_to
    serializer_class = s.AlertOutput
    filterset_class = _id_filters(Alert, ["subject", "scan", "kind"])


class DicomSendViewSet(ScopedViewSet):
    """Status of PACS deliveries (per-object results included), site-scoped."""

    selector = selectors.dicom_sends_visible_to
    serializer_class = s.DicomSendOutput
    filterset_class = _id_filters(DicomSend, ["scan", "destination", "status"])


class RoiViewSet(ScopedViewSet):
    selector = selectors.rois_visible_to
    serializer_class = s.RoiOutput
    filterset_class = _id_filters(RegionOfInterest, ["subject", "scan", "kind"])
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(
        request={"application/json": s.RoiJsonInput, "multipart/form-data": s.RoiFormInput},
        responses={201: s.RoiOutput},
        summary="Define a region of interest (geometry JSON or a label volume)",
    )
    def create(self, request):
        data = s.RoiInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        subject = get_object_or_404(subjects_visible_to(request.user), pk=values.pop("subject"))
        scan_id = values.pop("scan", None)
        scan = get_object_or_404(selectors.scans_visible_to(request.user), pk=scan_id) if scan_id else None
        roi = roi_define(actor=request.user, subject=subject, scan=scan, **values)
        return Response(s.RoiOutput(roi).data, status=status.HTTP_201_CREATED)


# --------------------------------------------------------------------------- time course


class TimeCourseMixin(SponsorAware):
    def time_course(self, subject) -> dict:
        """The subject's time course, or a sponsor's projection of it (compliance.sponsor,
        attached at start-up: the pseudonym, not the code); none attached, a 404."""
        course = selectors.time_course(subject)
        if not self.sponsor_view:
            return course
        if self.attached.sponsor is None:
            raise Http404
        return self.attached.sponsor(subject, course)


class SubjectTimeCourseViewSet(TimeCourseMixin, viewsets.GenericViewSet):
    """/subjects/{id}/time-course/: the subject's iron per ROI over time, ready to plot."""

    token_scopes = frozenset({TokenScope.READ})

    def get_queryset(self):
        return subjects_visible_to(self.request.user)

    @extend_schema(responses=s.TIME_COURSE_RESPONSE, summary="A subject's iron per ROI over time, ready to plot")
    def retrieve(self, request, pk=None):
        return Response(self.time_course(self.get_object()))


@extend_schema(
    responses=s.TIME_COURSE_RESPONSE,
    summary="A subject's iron per ROI over time (?subject=<id>)",
    parameters=[OpenApiParameter("subject", ID_SCHEMA, required=True)],
)
class TimeCourseApi(TimeCourseMixin, APIView):
    """/time-course/?subject=<id>: the same as /subjects/{id}/time-course/."""

    token_scopes = frozenset({TokenScope.READ})

    def get(self, request):
        subject_id = parse_id(request.query_params.get("subject"))
        if subject_id is None:
            raise RuleViolation("subject_required", "Give ?subject=<id>.", field="subject")
        subject = get_object_or_404(subjects_visible_to(request.user), pk=subject_id)
        return Response(self.time_course(subject))
