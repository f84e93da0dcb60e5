"""How the API reads an id from a client: a whole number from 1 to 2**63 - 1.

One home for the bound, used by query filters (``IdFilter``) and inputs (``IdField``):
ids are 64-bit (BigAutoField), and a larger number reached the database and answered
500 ("Python int too large to convert to SQLite INTEGER"); now it is a 400 that names
the parameter.
"""

from __future__ import annotations

import django_filters
from django import forms
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

ID_MIN = 1
ID_MAX = 2**63 - 1


ID_SCHEMA = {"type": "integer", "format": "int64", "minimum": ID_MIN, "maximum": ID_MAX}


@extend_schema_field(ID_SCHEMA)
class IdFilter(django_filters.NumberFilter):
    """Filter by plain id (a NumberFilter took any decimal, and any size)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", ID_MIN)
        kwargs.setdefault("max_value", ID_MAX)
        super().__init__(*args, **kwargs)


class IdField(serializers.IntegerField):
    """An input id."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", ID_MIN)
        kwargs.setdefault("max_value", ID_MAX)
        super().__init__(**kwargs)


def parse_id(value) -> int | None:
    """``value`` as an id when it is one (ASCII digits, within the bounds), else None: for
    the few places that read an id without a form or serializer (a query parameter that
    may also hold a code, a browser form's hidden field)."""
    text = str(value).strip() if value is not None else ""
    if not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if ID_MIN <= number <= ID_MAX else None
