"""The site-scoped read-only base viewset every REST endpoint builds on (writes are
explicit actions that call one service), and ``VIEW_OUTPUTS``, the registry through which
the layer above attaches what it owns to the lower layers' views at start-up.

This module is the shared plumbing of every app's API: it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.utils.functional import cached_property
from rest_framework import mixins, status, viewsets
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from config.pagination import ApiPagination
from config.token_scopes import TokenScope


@dataclass(frozen=True)
class Attached:
    """What the layer above attached to one view.

    ``sponsor``: what a sponsor reads there, the de-identified projection (a serializer
    class; for a view that answers plain data, a function of ``(object, data)``), or None,
    and then a sponsor gets nothing there (an empty list, a 404 detail).
    ``detail``: the identified detail output, when the layer above extends it (a signed
    record shows its signatures)."""

    sponsor: Any = None
    detail: type[BaseSerializer[Any]] | None = None


class ViewOutputs:
    """The registry. ``compliance`` fills it from ``ComplianceConfig.ready``:
    ``compliance.api_outputs.attach_to_api`` (the sponsor's rule and projections from
    ``compliance.sponsor``, the one home of de-identification, and the signatures).

    Until the sponsor's rule is installed, no reader can be told apart: a request fails
    (ImproperlyConfigured) rather than serve a sponsor the identified view."""

    def __init__(self) -> None:
        self._views: dict[type, Attached] = {}
        self._applies_to: Callable[[Any], bool] | None = None
        self._check_query: Callable[[Mapping[str, Any]], None] | None = None

    def install_sponsor_rule(
        self, *, applies_to: Callable[[Any], bool], check_query: Callable[[Mapping[str, Any]], None]
    ) -> None:
        """``applies_to(user)``: whether the user reads as a sponsor; ``check_query(params)``
        refuses a sponsor's filter or ordering on an identified value."""
        self._applies_to, self._check_query = applies_to, check_query

    def attach(self, view: type, **outputs: Any) -> None:
        """Attach ``sponsor=`` and/or ``detail=`` (``Attached``) to ``view`` and its subclasses."""
        self._views[view] = replace(self._views.get(view, Attached()), **outputs)

    def of(self, view: type) -> Attached:
        for klass in view.__mro__:
            if klass in self._views:
                return self._views[klass]
        return Attached()

    def is_sponsor(self, user) -> bool:
        if self._applies_to is None:
            raise ImproperlyConfigured("No sponsor rule installed (compliance.api_outputs.attach_to_api, at start-up).")
        return self._applies_to(user)

    def check_sponsor_query(self, params: Mapping[str, Any]) -> None:
        if self._check_query is None:
            raise ImproperlyConfigured("No sponsor rule installed (compliance.api_outputs.attach_to_api, at start-up).")
        self._check_query(params)


VIEW_OUTPUTS = ViewOutputs()


class SponsorAware:
    """A view that answers a sponsor with what ``VIEW_OUTPUTS`` attached to it."""

    request: Any

    @cached_property
    def sponsor_view(self) -> bool:
        # The schema is one for every reader; it documents both shapes (config.schema).
        return not getattr(self, "swagger_fake_view", False) and VIEW_OUTPUTS.is_sponsor(self.request.user)

    @property
    def attached(self) -> Attached:
        return VIEW_OUTPUTS.of(type(self))


class ScopedViewSet(SponsorAware, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """List and detail over ``selector(request.user)``, a site-scoped selector: objects
    outside the user's sites are not in the queryset at all, so their detail is a 404."""

    # A site-scoped selector: ``selector(user)`` -> the queryset this user may read.
    selector: ClassVar[Callable[[Any], QuerySet[Any]]]
    pagination_class: type[BasePagination] | None = ApiPagination
    # Read-only integration tokens may list and read (compliance.permissions.TokenScopePermission).
    token_scopes = frozenset({TokenScope.READ})

    def get_queryset(self):
        queryset = type(self).selector(self.request.user)
        if self.sponsor_view and self.attached.sponsor is None:
            return queryset.none()
        return queryset

    def filter_queryset(self, queryset):
        if self.sponsor_view:
            VIEW_OUTPUTS.check_sponsor_query(self.request.query_params)
        return super().filter_queryset(queryset)

    def get_serializer_class(self):
        if self.sponsor_view and self.attached.sponsor is not None:
            return self.attached.sponsor
        return super().get_serializer_class()

    def validated(self, input_class, **kwargs) -> dict:
        serializer = input_class(data=self.request.data, context=self.get_serializer_context(), **kwargs)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def output(self, obj, http_status=status.HTTP_200_OK, serializer_class=None) -> Response:
        serializer_class = serializer_class or self.get_serializer_class()
        return Response(serializer_class(obj, context=self.get_serializer_context()).data, status=http_status)

    def refetched(self, obj):
        # Re-read through the selector so the output has its annotations and joins.
        return self.get_queryset().get(pk=obj.pk)
