"""The site-scoped read-only base viewset every REST endpoint builds on (writes are
explicit actions that call one service)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.db.models import QuerySet
from django.utils.functional import cached_property
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from config.pagination import ApiPagination
from config.token_scopes import TokenScope


class ScopedViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """List and detail over ``selector(request.user)``, a site-scoped selector: objects
    outside the user's sites are not in the queryset at all, so their detail is a 404."""

    # A site-scoped selector: ``selector(user)`` -> the queryset this user may read.
    selector: ClassVar[Callable[[Any], QuerySet[Any]]]
    pagination_class = ApiPagination
    # Read-only integration tokens may list and read (compliance.permissions.TokenScopePermission).
    token_scopes = frozenset({TokenScope.READ})

    # What a sponsor reads here: a de-identified projection from compliance.sponsor, or
    # None, and then nothing (an empty list, a 404 detail).
    sponsor_serializer_class: type[BaseSerializer[Any]] | None = None

    @cached_property
    def sponsor_view(self) -> bool:
        from compliance.sponsor import applies_to

        # The schema is one for every reader; it documents both shapes (config.schema).
        return not getattr(self, "swagger_fake_view", False) and applies_to(self.request.user)

    def get_queryset(self):
        queryset = type(self).selector(self.request.user)
        if self.sponsor_view and self.sponsor_serializer_class is None:
            return queryset.none()
        return queryset

    def filter_queryset(self, queryset):
        if self.sponsor_view:
            from compliance.sponsor import check_query

            check_query(self.request.query_params)
        return super().filter_queryset(queryset)

    def get_serializer_class(self):
        if self.sponsor_view and self.sponsor_serializer_class is not None:
            return self.sponsor_serializer_class
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
