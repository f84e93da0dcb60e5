"""REST endpoints: signatures, exports (a scan's DICOM study included, under the scan's
URL), audit events, API tokens. Scoped reads, one service per write."""

from __future__ import annotations

import django_filters
from django.db import transaction
from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework import serializers as drf_serializers
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance import selectors, signatures, sponsor, tasks, tokens
from compliance import serializers as s
from compliance.models import ApiToken, Export, TokenEnd
from compliance.services.audit_trail import audit_trail_verify
from compliance.services.exports import export_download, export_request, export_retry, exports_visible_to
from config.errors import RuleViolation
from config.ids import ID_SCHEMA, IdField, IdFilter, parse_id
from config.token_scopes import TokenScope
from config.viewsets import ScopedViewSet


def _visible_record(user, object_type: str, object_id: str):
    """The record to sign or list, only if the user can see its site (else 404)."""
    from trials.permissions.access import visible_site_ids

    if sponsor.applies_to(user):  # signatures are not part of the sponsor's de-identified view
        raise Http404
    kind = signatures.kind_for_label(object_type)
    pk = parse_id(object_id)
    obj = kind.model.objects.filter(pk=pk).first() if pk is not None else None
    if obj is None or kind.scope(obj).site_id not in set(visible_site_ids(user).values_list("id", flat=True)):
        raise Http404
    return obj


class _SignatureApplySchema(s.SignatureApplyInput):
    """The input as documented: ``object_type`` is one of the signable kinds (registered
    when the app is ready, before the URLs, and so this module, are imported)."""

    object_type = drf_serializers.ChoiceField(  # type: ignore[assignment]  # a narrower field, for the schema only
        choices=signatures.signable_labels(), help_text="Model label of the record, e.g. trials.subject"
    )


class SignatureApi(APIView):
    token_scopes = frozenset({TokenScope.READ})  # GET only: read tokens never sign

    @extend_schema(
        parameters=[
            OpenApiParameter("object_type", str, enum=signatures.signable_labels()),
            OpenApiParameter("object_id", str),
        ],
        responses=s.SignatureOutput(many=True),
        summary="Signatures of one record (re-checked)",
    )
    def get(self, request):
        object_type, object_id = request.query_params.get("object_type"), request.query_params.get("object_id")
        if object_type is not None:
            signatures.kind_for_label(object_type)  # an unknown kind is a 400, with or without an id
        if object_type and object_id:
            items = signatures.signatures_verify(
                _visible_record(request.user, object_type, object_id), actor=request.user
            )
        else:
            items = list(selectors.signatures_visible_to(request.user)[:500])
        return Response(s.SignatureOutput(items, many=True).data)

    @extend_schema(
        request=_SignatureApplySchema,
        responses={201: s.SignatureOutput},
        summary="Sign a record (the password is asked again)",
    )
    def post(self, request):
        data = s.SignatureApplyInput(data=request.data)
        data.is_valid(raise_exception=True)
        obj = _visible_record(request.user, data.validated_data["object_type"], data.validated_data["object_id"])
        signature = signatures.signature_apply(
            signer=request.user,
            password=data.validated_data["password"],
            obj=obj,
            meaning=data.validated_data["meaning"],
        )
        return Response(s.SignatureOutput(signature).data, status=status.HTTP_201_CREATED)


class ExportFilter(django_filters.FilterSet):
    # By plain id: the default would look the trial up among all trials and answer 400
    # for an unknown id but 200 for another trial's, telling which trials exist.
    trial = IdFilter(field_name="trial_id")

    class Meta:
        model = Export
        fields = ["kind", "status", "trial"]


class ExportViewSet(ScopedViewSet):
    """Reports, data sets and DICOM studies taken out of the platform: those you asked
    for, and (monitors, auditors) every export of your trials. Only the requester may
    download one. A sponsor reads them de-identified (``compliance.sponsor.ExportOutput``)."""

    selector = exports_visible_to
    serializer_class = s.ExportOutput
    filterset_class = ExportFilter
    token_scopes = frozenset({TokenScope.READ})  # list and download; requesting one needs a full token

    @extend_schema(
        request=s.ExportRequestInput, responses={201: sponsor.export_response()}, summary="Request an export"
    )
    def create(self, request):
        from imaging import selectors as imaging_selectors
        from trials import selectors as trial_selectors

        data = s.ExportRequestInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        user = request.user

        def visible(queryset, pk, field):
            if pk is None:
                return None
            obj = queryset.filter(pk=pk).first()
            if obj is None:
                raise RuleViolation("not_found", f"No such {field}.", field=field)
            return obj

        scope = dict(
            trial=visible(trial_selectors.visible_trials(user), v["trial"], "trial"),
            site=visible(trial_selectors.visible_sites(user), v.get("site"), "site"),
            subject=visible(trial_selectors.subjects_visible_to(user), v.get("subject"), "subject"),
            scan=visible(imaging_selectors.scans_visible_to(user), v.get("scan"), "scan"),
        )
        with transaction.atomic():  # the export and its task (the outbox), together
            export = export_request(actor=user, kind=v["kind"], **scope)
            tasks.queue_export(export)
        return Response(self.get_serializer(export).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None,
        responses={202: sponsor.export_response()},
        summary="Queue a failed export again (its requester only; audited)",
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        with transaction.atomic():
            export = export_retry(actor=request.user, export=self.get_object())
            tasks.queue_export(export)
        return Response(self.get_serializer(export).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={(200, "application/octet-stream"): bytes}, summary="Download a ready export (audited)")
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        export = self.get_object()
        handle = export_download(actor=request.user, export=export)
        filename = export.file.rsplit("/", 1)[-1]
        response = FileResponse(handle, as_attachment=True, filename=filename, content_type=export.content_type)
        response["X-Content-SHA256"] = export.sha256
        return response


_SCAN_ID = OpenApiParameter(
    "id", int, OpenApiParameter.PATH, description="A unique integer value identifying this scan."
)


@extend_schema(parameters=[_SCAN_ID])
class ScanDicomExportViewSet(ScopedViewSet):
    """/scans/{id}/dicom-exports/: a scan's DICOM study as an export, requested and listed
    under the scan (looked up through imaging's site-scoped selector, so another site's
    scan is a 404); built on the export queue, watched and downloaded under /exports/{id}/."""

    selector = exports_visible_to
    serializer_class = s.ExportOutput
    filter_backends: list = []
    pagination_class = None

    def scan(self):
        from imaging.selectors import scans_visible_to

        return get_object_or_404(scans_visible_to(self.request.user), pk=self.kwargs["pk"])

    @extend_schema(summary="DICOM exports of the scan you may see")
    def list(self, request, pk=None):
        scan = self.scan()
        return Response(self.get_serializer(self.get_queryset().filter(scan=scan), many=True).data)

    @extend_schema(
        request=s.DicomExportInput,
        responses={201: sponsor.export_response()},
        summary="Request the scan's DICOM study as an export (built on the export queue; "
        "status and audited download under /api/v1/exports/{id}/)",
    )
    def create(self, request, pk=None):
        scan = self.scan()
        kind = self.validated(s.DicomExportInput)["kind"]
        with transaction.atomic():
            export = export_request(actor=request.user, kind=kind, scan=scan)
            tasks.queue_export(export)
        return self.output(export, status.HTTP_201_CREATED)


class _VerifyInput(drf_serializers.Serializer):
    trial = IdField()


class _VerifyOutput(drf_serializers.Serializer):
    """``audit.chain.ChainVerification.as_dict()``, as documented."""

    ok = drf_serializers.BooleanField()
    events_checked = drf_serializers.IntegerField()
    head_sequence = drf_serializers.IntegerField(allow_null=True)
    head_hash = drf_serializers.CharField(allow_blank=True)
    first_broken_sequence = drf_serializers.IntegerField(allow_null=True)
    problem = drf_serializers.CharField(allow_blank=True)


class AuditEventViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The audit trail of the trials where the user is a monitor or auditor."""

    serializer_class = s.AuditEventOutput
    filter_backends = []  # filters are the selector's keyword arguments
    token_scopes = frozenset({TokenScope.READ})

    def get_queryset(self):
        q = self.request.query_params
        return selectors.audit_events_visible_to(
            self.request.user,
            subject=q.get("subject"),
            username=q.get("user"),
            action=q.get("action"),
            date_from=selectors.parse_date(q.get("date_from")),
            date_to=selectors.parse_date(q.get("date_to")),
        )

    @extend_schema(parameters=[OpenApiParameter(n, str) for n in ("subject", "user", "action", "date_from", "date_to")])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(
        request=None,
        parameters=[OpenApiParameter("trial", ID_SCHEMA, required=True)],
        responses=_VerifyOutput,
        summary="Verify the hash chain (recorded as AUDIT_TRAIL_VERIFIED)",
    )
    @action(detail=False, methods=["post"])
    def verify(self, request):
        from trials.models import Trial

        data = _VerifyInput(data={"trial": request.query_params.get("trial", request.data.get("trial"))})
        data.is_valid(raise_exception=True)
        trial = Trial.objects.filter(pk=data.validated_data["trial"]).first()
        if trial is None:
            raise RuleViolation("not_found", "No such trial.", field="trial")
        result = audit_trail_verify(actor=request.user, trial=trial)
        return Response(result.as_dict())


# --------------------------------------------------------------------------- API tokens


class ApiTokenViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """A user's API tokens (an administrator's: everyone's, ``?user=<id>`` for one user):
    list, issue a scoped token for a bridge or an integration, revoke. Another user's
    token is a 404."""

    serializer_class = s.ApiTokenOutput
    filter_backends = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return ApiToken.objects.none()
        owner = self.request.query_params.get("user")
        if owner is not None and not owner.isdigit():
            raise RuleViolation("invalid", f"user must be a user id, got {owner!r}.", field="user")
        return tokens.tokens_visible_to(self.request.user, owner_id=int(owner) if owner else None)

    @extend_schema(parameters=[OpenApiParameter("user", int, description="administrators: one user's tokens")])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(
        request=s.ScopedTokenInput,
        responses={201: s.IssuedTokenOutput},
        summary="Issue a scoped token (scanner bridge, read-only integration); the key is shown once",
    )
    def create(self, request):
        from django.contrib.auth import get_user_model

        data = s.ScopedTokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        user = request.user
        if v.get("user") not in (None, request.user.pk):
            user = get_user_model().objects.filter(pk=v["user"]).first() if request.user.is_superuser else None
            if user is None:
                raise RuleViolation("not_found", "No such user.", field="user")
        issued = tokens.scoped_token_issue(
            actor=request.user, user=user, name=v["name"], scope=v["scope"], expires_in_days=v.get("expires_in_days")
        )
        return Response(s.issued_token_data(issued), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None}, summary="Revoke a token")
    def destroy(self, request, pk=None):
        tokens.token_revoke(actor=request.user, token=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenApi(APIView):
    """Exchange a username and password for a new API token (one per client; it expires)."""

    authentication_classes = []  # credentials are in the body; no session, so no CSRF
    permission_classes = [AllowAny]

    @extend_schema(request=s.TokenInput, responses=s.IssuedTokenOutput, summary="Obtain an API token")
    def post(self, request):
        serializer = s.TokenInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = tokens.auth_token_issue(request=request, **serializer.validated_data)
        return Response(s.issued_token_data(issued))


class LogoutApi(APIView):
    """Revoke the token this request presents (``{"all": true}``: every token of the
    user), or end the browser session that made it."""

    @extend_schema(request=s.LogoutInput, responses={204: None}, summary="Log out: revoke this client's token")
    def post(self, request):
        from django.contrib.auth import logout

        data = s.LogoutInput(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["all"]:
            tokens.tokens_revoke_all(actor=request.user, user=request.user, reason=TokenEnd.LOGOUT)
        if isinstance(request.auth, ApiToken):
            tokens.token_revoke(actor=request.user, token=request.auth, reason=TokenEnd.LOGOUT)
        else:
            logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)
