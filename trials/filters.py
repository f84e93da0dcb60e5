from __future__ import annotations

import django_filters
from django.db import models

from config.ids import IdFilter
from trials.models import CellBatch, Consent, ConsentDocument, Injection, NanoparticleLot, Site, Subject


class IdFilterSet(django_filters.FilterSet):
    # Foreign keys filter by plain id: a ModelChoiceFilter would look the id up among
    # all rows (another site's included) and cost a query per request.
    class Meta:
        filter_overrides = {
            models.ForeignKey: {"filter_class": IdFilter},
        }


class SiteFilter(IdFilterSet):
    class Meta(IdFilterSet.Meta):
        model = Site
        fields = ["trial", "code"]


class SubjectFilter(IdFilterSet):
    site_code = django_filters.CharFilter(field_name="site__code")
    code = django_filters.CharFilter(lookup_expr="icontains")

    class Meta(IdFilterSet.Meta):
        model = Subject
        fields = ["trial", "site", "site_code", "status", "code"]


class ConsentDocumentFilter(IdFilterSet):
    class Meta(IdFilterSet.Meta):
        model = ConsentDocument
        fields = ["trial", "version"]


class ConsentFilter(IdFilterSet):
    withdrawn = django_filters.BooleanFilter(field_name="withdrawn_at", lookup_expr="isnull", exclude=True)

    class Meta(IdFilterSet.Meta):
        model = Consent
        fields = ["subject", "document", "withdrawn"]


class LotFilter(IdFilterSet):
    class Meta(IdFilterSet.Meta):
        model = NanoparticleLot
        fields = ["trial", "manufacturer", "product", "lot_number", "qc_status"]


class BatchFilter(IdFilterSet):
    class Meta(IdFilterSet.Meta):
        model = CellBatch
        fields = ["trial", "site", "product_type", "release_status", "nanoparticle_lot", "donor_subject"]


class InjectionFilter(IdFilterSet):
    administered_after = django_filters.IsoDateTimeFilter(field_name="administered_at", lookup_expr="gte")
    administered_before = django_filters.IsoDateTimeFilter(field_name="administered_at", lookup_expr="lt")

    class Meta(IdFilterSet.Meta):
        model = Injection
        fields = ["subject", "batch", "route", "administered_after", "administered_before"]
