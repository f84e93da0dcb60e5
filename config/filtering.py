"""The API's query filtering: django-filter, strict about what it reads.

django-filter reads an empty value (``?status=``) as "no filter" (right for text only), a boolean it does not
know (``?active=maybe``) as "no filter", and the last of repeated values; so a request
the schema calls invalid was answered as if the filter were absent, which hides a
client's mistake. Here each of those is a 400 that names the parameter.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError

_BOOLEANS = {"true", "false", "True", "False", "1", "0"}


def single_value(request, name: str) -> str | None:
    """The one value of query parameter ``name`` (None when absent); repeated is a 400."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationError({name: ["Give this parameter once."]})
    return values[0] if values else None


class StrictFilterBackend(DjangoFilterBackend):
    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is not None:
            errors: dict[str, Any] = {}
            for name, filter_ in filterset.filters.items():
                try:
                    value = single_value(request, name)
                except ValidationError as exc:
                    errors.update(exc.detail if isinstance(exc.detail, dict) else {name: exc.detail})
                    continue
                if value is None:
                    continue
                if value == "" and not isinstance(filter_, django_filters.CharFilter):  # text may be empty
                    errors[name] = ["Give a value, or leave the parameter out."]
                elif isinstance(filter_, django_filters.BooleanFilter) and value not in _BOOLEANS:
                    errors[name] = ["Must be true or false."]
            if errors:
                raise ValidationError(errors)
        return super().filter_queryset(request, queryset, view)
