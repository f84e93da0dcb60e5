"""Serializer fields that accept exactly what the OpenAPI schema says they accept."""

from __future__ import annotations

from rest_framework import serializers


class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false``, nothing else: DRF's BooleanField also takes ``0``,
    ``"yes"`` or ``"on"``, which the schema (``type: boolean``) calls invalid, and a
    confirmation or a revocation of every token should never hang on such a guess."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if data is True or data is False:
            return data
        self.fail("invalid")
