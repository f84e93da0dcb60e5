"""The OpenAPI schema's one addition to drf-spectacular: every operation documents the
error envelope (``config.api_errors``) under each status it can answer with, so a
client (and the schemathesis run in tests/config/test_api_fuzz.py) knows them all."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from config.api_errors import ErrorEnvelope
from config.viewsets import VIEW_OUTPUTS

_ERRORS = {
    "400": "Invalid input: `fields` names each offending input.",
    "401": "Not authenticated.",
    "403": "Not authenticated, or the role may not do this.",
    "404": "No such object among those you may see (another site's included), or no such page.",
    "409": "A business rule refused the write (its `code` names the rule); nothing was written.",
    "413": "The request body is larger than the server accepts.",
    "415": "Unsupported Content-Type.",
}
_EVERY_OPERATION = ("401", "403", "404")
_WRITES = ("409",)
_WITH_BODY = ("400", "413", "415")


class ApiAutoSchema(AutoSchema):
    def get_response_serializers(self):
        """A viewset's own output, or, for a sponsor, its de-identified projection
        (attached by compliance.sponsor, ``config.viewsets.VIEW_OUTPUTS``): the schema
        documents both."""
        serializer = super().get_response_serializers()
        sponsor_class = VIEW_OUTPUTS.of(type(self.view)).sponsor
        if (
            not (isinstance(sponsor_class, type) and issubclass(sponsor_class, serializers.Serializer))
            or getattr(self.view, "action", None) not in ("list", "retrieve")
            or not isinstance(serializer, serializers.Serializer)
            # Already the sponsor's, or a PolymorphicProxySerializer that documents both.
            or isinstance(serializer, (PolymorphicProxySerializer, sponsor_class))
        ):
            return serializer
        own_class = type(serializer)
        name = getattr(getattr(sponsor_class, "Meta", None), "ref_name", sponsor_class.__name__)
        return PolymorphicProxySerializer(
            component_name=f"{own_class.__name__}Or{name}",
            serializers=[own_class, sponsor_class],
            resource_type_field_name=None,
        )

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = list(_EVERY_OPERATION)
        writes = self.method in ("POST", "PUT", "PATCH", "DELETE")
        if writes:
            codes += _WRITES
        if writes and self.get_request_serializer() is not None:
            codes += _WITH_BODY
        elif self._has_query_parameters():
            codes.append("400")
        for code in sorted(codes):
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorEnvelope, code, ["application/json"], direction)
                responses[code]["description"] = _ERRORS[code]
        return responses

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.DecimalField) and "pattern" in schema and not field.localize:
            # drf-spectacular's pattern also matches "", "-" and ".", which DRF refuses.
            whole, places = field.max_whole_digits, field.decimal_places
            integer = "0" if whole == 0 else rf"\d{{1,{whole}}}"
            schema["pattern"] = rf"^-?(?:{integer}(?:\.\d{{0,{places}}})?|\.\d{{1,{places}}})$"
        if (
            isinstance(field, serializers.CharField)
            and "pattern" not in schema
            and schema.get("type") == "string"
            and "format" not in schema
            and direction == "request"
        ):
            # DRF refuses a NUL character, and (stripping whitespace first) a blank value.
            blank = field.allow_blank or not field.trim_whitespace
            schema["pattern"] = r"^[^\x00]*$" if blank else r"^[^\x00]*[^\s\x00][^\x00]*$"
        if isinstance(field, serializers.FileField) and not getattr(field, "allow_empty_file", True):
            schema["minLength"] = 1  # DRF refuses an empty file
        if isinstance(field, (serializers.ListField, serializers.MultipleChoiceField)) and not field.allow_empty:
            schema["minItems"] = max(schema.get("minItems", 0), 1)
        return schema

    def _has_query_parameters(self) -> bool:
        return any(p.get("in") == "query" for p in self._get_parameters())
