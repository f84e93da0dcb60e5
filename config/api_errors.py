"""One JSON error shape for the whole API:

    {"error": {"code": "not_found", "message": "...", "fields": {"name": ["..."]}}}

DRF views answer it through ``exception_handler`` (REST_FRAMEWORK["EXCEPTION_HANDLER"]),
unhandled exceptions included (logged, answered 500 without internals). Errors raised
before or outside a DRF view (an unknown URL, a body over DATA_UPLOAD_MAX_MEMORY_SIZE
read by Django, a crash in middleware) go through Django's handler400/403/404/500
(``config.urls``), which answer the same envelope under /api/ and a friendly page
elsewhere.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.template import loader
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from config.errors import RuleViolation

logger = logging.getLogger("config.api_errors")

API_PREFIX = "/api/"

# What each status says when nothing more specific is known (URL-level errors, 500).
_GENERIC = {
    400: ("bad_request", "The request is malformed."),
    403: ("forbidden", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    413: ("request_too_large", "The request body is larger than this server accepts."),
    500: (
        "server_error",
        "The server could not answer this request. The error was logged; "
        "please try again or contact the trial's data manager.",
    ),
}


# --------------------------------------------------------------------------- rule codes -> HTTP statuses

# The one place where a rule's code (``RuleViolation.code``) becomes an HTTP status. The
# services raise codes only; a code not listed here is a 409 Conflict (the request is
# well formed, but the state of the records refuses it). Add a code here when it means
# something else: the input itself is wrong (400), the actor may not (403), the thing is
# not there (404), ... ``tests/config/test_rule_codes_have_a_status.py`` checks that every
# code raised in the project is listed here or meant to be a 409.
STATUS_BY_CODE: dict[str, int] = {
    # 400: the input is wrong, whatever the state of the records
    "administered_before_labelling": 400,
    "confirmation_required": 400,
    "donor_at_other_site": 400,
    "empty_upload": 400,
    "file_missing": 400,
    "geometry_or_labels": 400,
    "hydrodynamic_smaller_than_core": 400,
    "identifier_contains_phi": 400,
    "injection_not_found": 400,
    "invalid": 400,
    "invalid_checksum": 400,
    "invalid_credentials": 400,
    "invalid_drive_field": 400,
    "invalid_geometry": 400,
    "invalid_header": 400,
    "invalid_initial_status": 400,
    "invalid_kind": 400,
    "invalid_label_volume": 400,
    "invalid_region": 400,
    "invalid_meaning": 400,
    "invalid_metadata": 400,
    "invalid_password_env": 400,
    "invalid_scope": 400,
    "invalid_sha256": 400,
    "invalid_system_matrix": 400,
    "invalid_time_point": 400,
    "iron_concentration_missing": 400,
    "iron_concentrations_disagree": 400,
    "label_value_required": 400,
    "labelled_before_manufacture": 400,
    "lot_of_other_trial": 400,
    "lot_of_other_tracer": 400,
    "missing_metadata": 400,
    "name_required": 400,
    "no_change": 400,  # a correction that changes nothing
    "no_delta_concentration": 400,
    "not_a_calibration": 400,
    "not_a_calibration_upload": 400,
    "not_filterable": 400,
    "not_signable": 400,
    "otp_invalid": 400,
    "otp_required": 400,
    "reason_insufficient": 400,
    "reason_required": 400,
    "scan_of_other_subject": 400,
    "scan_required": 400,
    "scanner_not_found": 400,
    "scope_mismatch": 400,
    "scope_not_issuable": 400,
    "subject_required": 400,
    "token_lifetime_too_long": 400,
    "tracer_required": 400,
    "unknown_field": 400,
    "unsupported_checksum": 400,
    "upload_scanner_mismatch": 400,
    "upload_sha256_mismatch": 400,
    "incomplete_body": 400,  # the request body ended before its Content-Length
    "withdrawn_before_signed": 400,
    # live sessions (mpi-live/1): a malformed stream header or frames message
    "bad_frame_header": 400,
    "bad_frame_length": 400,
    "bad_frequency_selection": 400,
    "bad_stream_header": 400,
    "field_not_allowed": 400,
    "field_too_large": 400,
    "frame_too_large": 400,
    "frequency_out_of_range": 400,
    "frequency_selection_too_large": 400,
    "invalid_field_value": 400,
    "non_finite_samples": 400,
    "required_field_missing": 400,
    "too_many_fields": 400,
    "too_many_frames": 400,
    "unsupported_dtype": 400,
    "unsupported_payload": 400,
    "unsupported_protocol": 400,
    # 403: the actor may not
    "forbidden": 403,
    "scope_not_allowed": 403,
    "signature_refused": 403,
    "two_factor_not_enrolled": 403,
    "verifier_password_wrong": 403,
    # 404: not there (or not for this actor)
    "identity_missing": 404,
    "not_found": 404,
    "upload_terminated": 404,  # tus: a terminated upload is gone
    # others
    "tus_version": 412,  # tus: Tus-Resumable not supported
    "upload_too_large": 413,
    "unsupported_media_type": 415,
    "account_locked": 429,  # audit.credentials' lockout codes
    "address_throttled": 429,
    "checksum_mismatch": 460,  # tus checksum extension
}

# Codes made from a field's name (``enrolment_date_in_future``, ``cell_count_not_positive``,
# ...): the input is wrong.
STATUS_BY_CODE_SUFFIX: dict[str, int] = {
    "_in_future": 400,
    "_negative": 400,
    "_not_correctable": 400,
    "_not_positive": 400,
    "_out_of_range": 400,
}

RULE_DEFAULT_STATUS = 409


def status_for(code: str) -> int:
    """The HTTP status of a refused rule's ``code``."""
    if code in STATUS_BY_CODE:
        return STATUS_BY_CODE[code]
    for suffix, http_status in STATUS_BY_CODE_SUFFIX.items():
        if code.endswith(suffix):
            return http_status
    return RULE_DEFAULT_STATUS


class ErrorDetail(serializers.Serializer):
    """The error envelope's content, for the OpenAPI schema."""

    code = serializers.CharField(
        help_text="Stable, machine-readable: invalid, not_found, forbidden, a rule's code, ..."
    )
    message = serializers.CharField(help_text="For people.")
    fields = serializers.DictField(  # type: ignore[assignment]  # the envelope's key; Serializer.fields is DRF's own
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Messages per input field, when the error is about given fields.",
    )


class ErrorEnvelope(serializers.Serializer):
    error = ErrorDetail()


def _field_errors(detail) -> dict:
    if isinstance(detail, dict):
        return {
            key: [str(item) for item in (value if isinstance(value, list) else [value])]
            for key, value in detail.items()
        }
    if isinstance(detail, list):
        return {"non_field_errors": [str(item) for item in detail]}
    return {"non_field_errors": [str(detail)]}


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    body: dict[str, object] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def error_response(code: str, message: str, http_status: int, fields: dict | None = None) -> Response:
    return Response(error_body(code, message, fields), status=http_status)


def exception_handler(exc, context):
    if isinstance(exc, RuleViolation):
        set_rollback()
        fields = {exc.field: [exc.message]} if exc.field else None
        return error_response(exc.code, exc.message, status_for(exc.code), fields)
    if isinstance(exc, DjangoValidationError):
        set_rollback()
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        return error_response("invalid", "The request is invalid.", status.HTTP_400_BAD_REQUEST, _field_errors(detail))
    if isinstance(exc, RequestDataTooBig):
        set_rollback()
        return error_response(*_GENERIC[413], status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, SuspiciousOperation):
        set_rollback()
        return error_response(*_GENERIC[400], status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        # Not an API error: a defect. Log it with its traceback for us, answer the
        # envelope without any internals for the client, and write nothing.
        set_rollback()
        request = context.get("request")
        logger.error(
            "Unhandled exception in %s %s", getattr(request, "method", "?"), getattr(request, "path", "?"), exc_info=exc
        )
        return error_response(*_GENERIC[500], status.HTTP_500_INTERNAL_SERVER_ERROR)
    if isinstance(exc, exceptions.ValidationError):
        return error_response("invalid", "The request is invalid.", response.status_code, _field_errors(exc.detail))
    message = str(exc.detail) if isinstance(exc, exceptions.APIException) else str(exc)
    code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    if not isinstance(code, str):
        code = "error"
    response.data = error_body(code, message)
    return response


# --------------------------------------------------------------------------- URL-level handlers


def _error_view(http_status: int, template: str):
    def view(request, exception=None):
        # Django reads an oversized body as a SuspiciousOperation (400); it is a 413.
        status_ = 413 if isinstance(exception, RequestDataTooBig) else http_status
        if request.path.startswith(API_PREFIX):
            return JsonResponse(error_body(*_GENERIC[status_]), status=status_)
        return render(request, template, status=status_)

    return view


def server_error(request):
    if request.path.startswith(API_PREFIX):
        return JsonResponse(error_body(*_GENERIC[500]), status=500)
    # Rendered without the request's context: whatever failed (the database, a context
    # processor) must not fail the error page too.
    return HttpResponseServerError(loader.get_template("500.html").render())


bad_request = _error_view(400, "400.html")
permission_denied = _error_view(403, "403.html")
page_not_found = _error_view(404, "404.html")
