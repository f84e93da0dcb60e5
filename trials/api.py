"""REST endpoints for trials. Each method: scope through a selector, translate the
input, call one service, translate the output.

Objects outside the user's sites are not in the queryset at all, so detail routes
answer 404 for them (never 403, which would confirm they exist).
"""

from __future__ import annotations

from collections.abc import Mapping

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS

from compliance import sponsor
from config.viewsets import ScopedViewSet as BaseScopedViewSet
from trials import filters, selectors
from trials import serializers as s
from trials.services.batches import batch_correct, batch_label, batch_register, batch_set_release_status
from trials.services.consent import consent_correct, consent_document_create, consent_sign, consent_withdraw
from trials.services.identity import subject_identity_read, subject_identity_set
from trials.services.injections import injection_correct, injection_record
from trials.services.lots import lot_correct, lot_register, lot_set_qc_status
from trials.services.subjects import subject_change_status, subject_correct, subject_enrol


class ScopedViewSet(BaseScopedViewSet):
    """The shared scoped viewset, plus the PATCH input of corrections."""

    def correction(self, input_class) -> dict:
        """The validated fields of a PATCH, plus any field the input does not know, so
        the service refuses it by name ("code_not_correctable") instead of the API
        dropping it silently."""
        known = self.validated(input_class)
        data = self.request.data  # a mapping: validated() above refuses anything else
        unknown = (
            {name: data[name] for name in data if name not in input_class().fields} if isinstance(data, Mapping) else {}
        )
        return {**known, **unknown}


class TrialViewSet(ScopedViewSet):
    selector = selectors.visible_trials
    serializer_class = s.TrialOutput
    sponsor_serializer_class = s.TrialOutput  # no subject data; the secret is never serialised
    filterset_fields = ["status", "phase", "protocol_number"]
    ordering_fields = ["protocol_number", "created_at"]


class SiteViewSet(ScopedViewSet):
    selector = selectors.visible_sites
    serializer_class = s.SiteOutput
    sponsor_serializer_class = sponsor.SiteOutput
    filterset_class = filters.SiteFilter
    ordering_fields = ["code", "name"]


class SubjectViewSet(ScopedViewSet):
    selector = selectors.subjects_visible_to
    serializer_class = s.SubjectOutput
    sponsor_serializer_class = sponsor.SubjectOutput
    filterset_class = filters.SubjectFilter
    ordering_fields = ["code", "enrolment_date", "status", "created_at"]

    def get_serializer_class(self):
        if self.action in ("retrieve", "partial_update") and not self.sponsor_view:
            return s.SubjectDetailOutput
        return super().get_serializer_class()

    @extend_schema(request=s.SubjectEnrolInput, responses={201: s.SubjectOutput}, summary="Enrol a subject")
    def create(self, request):
        subject = subject_enrol(actor=request.user, **self.validated(s.SubjectEnrolInput))
        return self.output(self.refetched(subject), status.HTTP_201_CREATED)

    @extend_schema(
        request=s.SubjectCorrectInput,
        responses=s.SubjectDetailOutput,
        summary="Correct a subject's enrolment date (with a reason; audited with old and new values)",
    )
    def partial_update(self, request, pk=None):
        subject = subject_correct(
            actor=request.user, subject=self.get_object(), **self.correction(s.SubjectCorrectInput)
        )
        return self.output(self.refetched(subject))

    @extend_schema(request=s.SubjectStatusInput, responses=s.SubjectOutput, summary="Change a subject's status")
    @action(detail=True, methods=["post"], url_path="status")
    def change_status(self, request, pk=None):
        subject = self.get_object()
        subject = subject_change_status(actor=request.user, subject=subject, **self.validated(s.SubjectStatusInput))
        return self.output(self.refetched(subject))

    @extend_schema(
        methods=["GET"],
        request=None,
        responses=s.IdentityOutput,
        summary="Read a subject's identity (PHI roles only; every read is audited)",
    )
    @extend_schema(
        methods=["PUT", "POST"],
        request=s.IdentityInput,
        responses=s.IdentityOutput,
        summary="Record or correct a subject's identity (a correction needs a reason)",
    )
    # Identifiable data is for people: no scoped (integration or scanner) token reaches it.
    @action(detail=True, methods=["get", "put", "post"], token_scopes=frozenset())
    def identity(self, request, pk=None):
        if request.method in SAFE_METHODS:  # GET and HEAD are reads, audited alike, refusals too
            try:
                subject = self.get_object()
            except Http404:
                subject = None  # outside the reader's sites: the service audits the attempt and answers 404
            identity = subject_identity_read(actor=request.user, subject=subject, requested_id=pk)
        else:
            subject = self.get_object()
            identity = subject_identity_set(actor=request.user, subject=subject, **self.validated(s.IdentityInput))
        return self.output(identity, serializer_class=s.IdentityOutput)


class ConsentDocumentViewSet(ScopedViewSet):
    selector = selectors.consent_documents_visible_to
    serializer_class = s.ConsentDocumentOutput
    sponsor_serializer_class = s.ConsentDocumentOutput  # the trial's documents, no subject data
    filterset_class = filters.ConsentDocumentFilter
    ordering_fields = ["effective_date", "version"]
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(
        request={"multipart/form-data": s.ConsentDocumentInput},
        responses={201: s.ConsentDocumentOutput},
        summary="Add a consent document version (its SHA-256 is computed on upload)",
    )
    def create(self, request):
        document = consent_document_create(actor=request.user, **self.validated(s.ConsentDocumentInput))
        return self.output(document, status.HTTP_201_CREATED)


class ConsentViewSet(ScopedViewSet):
    selector = selectors.consents_visible_to
    serializer_class = s.ConsentOutput
    sponsor_serializer_class = sponsor.ConsentOutput
    filterset_class = filters.ConsentFilter
    ordering_fields = ["signed_at", "withdrawn_at"]

    @extend_schema(request=s.ConsentSignInput, responses={201: s.ConsentOutput}, summary="Record a signed consent")
    def create(self, request):
        consent = consent_sign(actor=request.user, **self.validated(s.ConsentSignInput))
        return self.output(self.refetched(consent), status.HTTP_201_CREATED)

    @extend_schema(
        request=s.ConsentCorrectInput,
        responses=s.ConsentOutput,
        summary="Correct a consent's signature time or scopes (with a reason; audited)",
    )
    def partial_update(self, request, pk=None):
        consent = consent_correct(
            actor=request.user, consent=self.get_object(), **self.correction(s.ConsentCorrectInput)
        )
        return self.output(self.refetched(consent))

    @extend_schema(
        request=s.ConsentWithdrawInput, responses=s.ConsentOutput, summary="Withdraw some or all scopes of a consent"
    )
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None):
        consent = self.get_object()
        consent = consent_withdraw(actor=request.user, consent=consent, **self.validated(s.ConsentWithdrawInput))
        return self.output(self.refetched(consent))


class NanoparticleLotViewSet(ScopedViewSet):
    selector = selectors.lots_visible_to
    serializer_class = s.LotOutput
    sponsor_serializer_class = s.LotOutput  # a manufacturer's lot: product data, nobody's
    filterset_class = filters.LotFilter
    ordering_fields = ["manufacturer", "lot_number", "expiry_date"]
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(
        request={"multipart/form-data": s.LotRegisterInput},
        responses={201: s.LotOutput},
        summary="Register a nanoparticle lot (quarantined until QC release)",
    )
    def create(self, request):
        lot = lot_register(actor=request.user, **self.validated(s.LotRegisterInput))
        return self.output(lot, status.HTTP_201_CREATED)

    @extend_schema(
        request=s.LotCorrectInput,
        responses=s.LotOutput,
        summary="Correct a lot's expiry, iron, sizes, PDI or coating (with a reason; audited)",
    )
    def partial_update(self, request, pk=None):
        lot = lot_correct(actor=request.user, lot=self.get_object(), **self.correction(s.LotCorrectInput))
        return self.output(lot)

    @extend_schema(request=s.LotQcStatusInput, responses=s.LotOutput, summary="Release, quarantine or reject a lot")
    @action(detail=True, methods=["post"], url_path="qc-status")
    def qc_status(self, request, pk=None):
        lot = self.get_object()
        lot = lot_set_qc_status(actor=request.user, lot=lot, **self.validated(s.LotQcStatusInput))
        return self.output(lot)


class CellBatchViewSet(ScopedViewSet):
    selector = selectors.batches_visible_to
    serializer_class = s.BatchOutput
    sponsor_serializer_class = sponsor.BatchOutput
    filterset_class = filters.BatchFilter
    ordering_fields = ["batch_code", "manufactured_at", "cells_remaining"]

    @extend_schema(request=s.BatchRegisterInput, responses={201: s.BatchOutput}, summary="Register a cell batch")
    def create(self, request):
        batch = batch_register(actor=request.user, **self.validated(s.BatchRegisterInput))
        return self.output(self.refetched(batch), status.HTTP_201_CREATED)

    @extend_schema(
        request=s.BatchCorrectInput,
        responses=s.BatchOutput,
        summary="Correct a batch's counts, times, ids or labelling values (with a reason; audited)",
    )
    def partial_update(self, request, pk=None):
        batch = batch_correct(actor=request.user, batch=self.get_object(), **self.correction(s.BatchCorrectInput))
        return self.output(self.refetched(batch))

    @extend_schema(request=s.BatchLabelInput, responses=s.BatchOutput, summary="Record the batch's SPION labelling")
    @action(detail=True, methods=["post"])
    def label(self, request, pk=None):
        batch = self.get_object()
        batch = batch_label(actor=request.user, batch=batch, **self.validated(s.BatchLabelInput))
        return self.output(self.refetched(batch))

    @extend_schema(request=s.BatchReleaseInput, responses=s.BatchOutput, summary="Release or reject a batch")
    @action(detail=True, methods=["post"])
    def release(self, request, pk=None):
        batch = self.get_object()
        batch = batch_set_release_status(actor=request.user, batch=batch, **self.validated(s.BatchReleaseInput))
        return self.output(self.refetched(batch))


class InjectionViewSet(ScopedViewSet):
    selector = selectors.injections_visible_to
    serializer_class = s.InjectionOutput
    sponsor_serializer_class = sponsor.InjectionOutput
    filterset_class = filters.InjectionFilter
    ordering_fields = ["administered_at"]

    @extend_schema(request=s.InjectionRecordInput, responses={201: s.InjectionOutput}, summary="Record an injection")
    def create(self, request):
        injection = injection_record(actor=request.user, **self.validated(s.InjectionRecordInput))
        return self.output(self.refetched(injection), status.HTTP_201_CREATED)

    @extend_schema(
        request=s.InjectionCorrectInput,
        responses=s.InjectionOutput,
        summary="Correct an injection (with a reason; audited; invalidates a signed visit)",
    )
    def partial_update(self, request, pk=None):
        injection = injection_correct(
            actor=request.user, injection=self.get_object(), **self.correction(s.InjectionCorrectInput)
        )
        return self.output(self.refetched(injection))
