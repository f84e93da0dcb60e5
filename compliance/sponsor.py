"""The sponsor's view: one de-identified projection of the trial, the same in the API, the
browser and the sponsor data set (``compliance.reports.build_sponsor_deidentified``).

The rule, in one place:

- which subjects: only those whose data-sharing consent is in force
  (``trials.selectors.subjects_sharing_data``; every site-scoped selector applies it to a
  sponsor through ``trials.selectors.sponsor_limited``);
- a subject appears by pseudonym (``deidentify.subject_pseudonym``), a site by an opaque
  code, a cell product by an opaque product id (never its chain-of-identity or donation
  id, nor its batch code);
- every date of a subject is shifted by that subject's ``deidentify.date_shift_days`` and
  given as a day (``deidentify.shifted_day``), in fields named ``*_shifted``;
- left out: real codes and dates, record timestamps, staff names, free text (withdrawal
  reasons, anatomical targets, scan status reasons, alert messages), file names,
  acquisition metadata and raw files, signatures and the audit trail.

An API endpoint serves a sponsor only through a projection defined here and attached to
its view in ``compliance.api_outputs.attach_to_api`` (at start-up, through ``config.viewsets.VIEW_OUTPUTS``, so that the
lower layers' views name nothing of this module); without one, a sponsor's list is empty
and every detail a 404. Browser pages are the same: only those marked for sponsors answer
them, the rest are 404 (``not_for_sponsors``).
"""

from __future__ import annotations

from functools import wraps

from django.http import Http404
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from config.errors import RuleViolation
from trials import deidentify

# --------------------------------------------------------------------------- who


def applies_to(user) -> bool:
    """Whether ``user`` reads the trial as a sponsor (de-identified). A user who is a
    sponsor anywhere gets the de-identified view everywhere: the safe side of a mix."""
    from trials.permissions.access import sponsor_trial_ids

    if user is None or not getattr(user, "is_authenticated", False):
        return False
    return sponsor_trial_ids(user).exists()


def not_for_sponsors(view):
    """A browser page a sponsor does not get: 404, as for a page that is not there."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if applies_to(request.user):
            raise Http404
        return view(request, *args, **kwargs)

    return wrapped


# Query parameters and orderings on identified values: a sponsor filtering or sorting by
# a real code or date would learn it (``?code=...``, ``?administered_after=...``).
IDENTIFIED_FILTERS = frozenset({"code", "site_code", "name", "administered_after", "administered_before"})
IDENTIFIED_ORDERINGS = frozenset(
    {
        "code",
        "name",
        "enrolment_date",
        "created_at",
        "updated_at",
        "signed_at",
        "withdrawn_at",
        "manufactured_at",
        "labelled_at",
        "batch_code",
        "administered_at",
    }
)


def check_query(params) -> None:
    """Refuse (400) a sponsor's filter or ordering on an identified value."""
    for name in IDENTIFIED_FILTERS & set(params):
        raise RuleViolation("not_filterable", f"The de-identified view cannot be filtered by {name}.", field=name)
    orderings = {part.strip().lstrip("-") for part in params.get("ordering", "").split(",")}
    if hidden := sorted(orderings & IDENTIFIED_ORDERINGS):
        raise RuleViolation(
            "not_filterable",
            f"The de-identified view cannot be ordered by {', '.join(hidden)}.",
            field="ordering",
        )


# --------------------------------------------------------------------------- keys


class Keys:
    """Pseudonyms, date shifts and opaque codes for one request or export; each trial's
    secret is read once."""

    def __init__(self, trials=()):
        self._trials = {t.pk: t for t in trials}

    def trial(self, trial_id):
        if trial_id not in self._trials:
            from trials.models import Trial

            self._trials[trial_id] = Trial.objects.only("id", "deidentification_secret").get(pk=trial_id)
        return self._trials[trial_id]

    def pseudonym(self, subject) -> str | None:
        return None if subject is None else deidentify.subject_pseudonym(self.trial(subject.trial_id), subject)

    def shift_days(self, subject) -> int:
        return deidentify.date_shift_days(self.trial(subject.trial_id), subject)

    def day(self, subject, value):
        """``value`` (a date or datetime of ``subject``) as a shifted day."""
        return deidentify.shifted_day(value, self.shift_days(subject))

    def site(self, site) -> str:
        return deidentify.opaque_id(self.trial(site.trial_id), "SITE", site.code)

    def product(self, batch) -> str:
        return deidentify.opaque_id(self.trial(batch.trial_id), "COI", batch.chain_of_identity_id)


def keys_of(serializer) -> Keys:
    context = serializer.context
    if "_sponsor_keys" not in context:
        context["_sponsor_keys"] = Keys()
    return context["_sponsor_keys"]


def _method(fn, field=serializers.CharField, **kwargs):
    """A read-only field computed as ``fn(keys, obj)``."""

    class Computed(field):  # type: ignore[misc,valid-type]  # a base chosen per call: mypy cannot check it
        def __init__(self, **kw):
            super().__init__(source="*", read_only=True, **kw)

        def to_representation(self, obj):
            value = fn(keys_of(self), obj)
            return None if value is None else super().to_representation(value)

    return Computed(**kwargs)


# --------------------------------------------------------------------------- projections


class SiteOutput(serializers.Serializer):
    class Meta:
        ref_name = "SponsorSiteOutput"  # the schema's name: beside, not instead of, the identified SiteOutput

    id = serializers.IntegerField()
    trial = serializers.IntegerField(source="trial_id")
    site_code = _method(lambda k, site: k.site(site))  # as in the subjects and the data set


class SubjectOutput(serializers.Serializer):
    class Meta:
        ref_name = "SponsorSubjectOutput"  # the schema's name: beside, not instead of, the identified SubjectOutput

    id = serializers.IntegerField()
    pseudonym = _method(lambda k, s: k.pseudonym(s))
    trial = serializers.IntegerField(source="trial_id")
    site = serializers.IntegerField(source="site_id")
    site_code = _method(lambda k, s: k.site(s.site))
    status = serializers.CharField()
    enrolment_date_shifted = _method(lambda k, s: k.day(s, s.enrolment_date), serializers.DateField)


class ConsentOutput(serializers.Serializer):
    class Meta:
        ref_name = "SponsorConsentOutput"  # the schema's name: beside, not instead of, the identified ConsentOutput

    id = serializers.IntegerField()
    subject = serializers.IntegerField(source="subject_id")
    pseudonym = _method(lambda k, c: k.pseudonym(c.subject))
    document = serializers.IntegerField(source="document_id")
    document_version = serializers.CharField(source="document.version")
    scopes = serializers.ListField(child=serializers.CharField())
    signed_on_shifted = _method(lambda k, c: k.day(c.subject, c.signed_at), serializers.DateField)
    withdrawn_scopes = _method(
        lambda k, c: sorted(c.withdrawn_scopes or {}), serializers.ListField, child=serializers.CharField()
    )
    withdrawn_on_shifted = _method(
        lambda k, c: k.day(c.subject, c.withdrawn_at), serializers.DateField, allow_null=True
    )


class BatchOutput(serializers.Serializer):
    class Meta:
        ref_name = "SponsorBatchOutput"  # the schema's name: beside, not instead of, the identified BatchOutput

    id = serializers.IntegerField()
    trial = serializers.IntegerField(source="trial_id")
    site = serializers.IntegerField(source="site_id")
    product_id = _method(lambda k, b: k.product(b))
    product_type = serializers.CharField()
    donor_pseudonym = _method(lambda k, b: k.pseudonym(b.donor_subject), allow_null=True)
    allogeneic = serializers.BooleanField()
    cell_count = serializers.IntegerField()
    viability_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
    nanoparticle_lot = serializers.IntegerField(source="nanoparticle_lot_id", allow_null=True)
    incubation_concentration_ug_fe_per_ml = serializers.DecimalField(max_digits=10, decimal_places=3, allow_null=True)
    iron_per_cell_pg = serializers.DecimalField(max_digits=10, decimal_places=3, allow_null=True)
    labelling_efficiency_percent = serializers.DecimalField(max_digits=5, decimal_places=2, allow_null=True)
    release_status = serializers.CharField()
    cells_injected = serializers.IntegerField(required=False)
    cells_remaining = serializers.IntegerField(required=False)


class InjectionOutput(serializers.Serializer):
    class Meta:
        ref_name = "SponsorInjectionOutput"  # the schema's name: beside, not instead of, the identified InjectionOutput

    id = serializers.IntegerField()
    subject = serializers.IntegerField(source="subject_id")
    pseudonym = _method(lambda k, i: k.pseudonym(i.subject))
    batch = serializers.IntegerField(source="batch_id")
    product_id = _method(lambda k, i: k.product(i.batch))
    route = serializers.CharField()
    administered_cells = serializers.IntegerField()
    volume_ml = serializers.DecimalField(max_digits=8, decimal_places=3)
    planned_duration_s = serializers.DecimalField(max_digits=9, decimal_places=3, allow_null=True)
    administered_on_shifted = _method(lambda k, i: k.day(i.subject, i.administered_at), serializers.DateField)


def _measurement_output():
    from imaging.serializers import MeasurementOutput

    return MeasurementOutput


class ScanOutput(serializers.Serializer):
    class Meta:
        ref_name = "SponsorScanOutput"  # the schema's name: beside, not instead of, the identified ScanOutput

    id = serializers.IntegerField()
    subject = serializers.IntegerField(source="subject_id")
    pseudonym = _method(lambda k, s: k.pseudonym(s.subject))
    injection = serializers.IntegerField(source="injection_id")
    hours_after_injection = serializers.FloatField()
    status = serializers.CharField()
    metrics_summary = serializers.JSONField()
    metrics = serializers.SerializerMethodField()

    def get_metrics(self, scan) -> list:
        return _measurement_output()(scan.measurements.all(), many=True).data


def time_course(subject, course: dict) -> dict:
    """``imaging.selectors.time_course`` as a sponsor reads it: the pseudonym, not the code."""
    course = {k: v for k, v in course.items() if k != "subject_code"}
    return {**course, "pseudonym": Keys([subject.trial]).pseudonym(subject)}


def export_scope(keys: Keys, export) -> str:
    if export.subject_id:
        subject = f"subject {keys.pseudonym(export.subject)}"
        return f"scan #{export.scan_id} of {subject}" if export.scan_id else subject
    if export.site_id:
        return f"site {keys.site(export.site)}"
    return f"trial {export.trial.protocol_number}"


class ExportOutput(serializers.Serializer):
    class Meta:
        ref_name = "SponsorExportOutput"  # the schema's name: beside, not instead of, the identified ExportOutput

    id = serializers.IntegerField()
    kind = serializers.CharField()
    trial = serializers.IntegerField(source="trial_id")
    scan = serializers.IntegerField(source="scan_id", allow_null=True)
    scope = _method(export_scope)
    status = serializers.CharField()
    progress_stage = serializers.CharField()
    progress_percent = serializers.FloatField()
    content_type = serializers.CharField()
    size_bytes = serializers.IntegerField(allow_null=True)
    sha256 = serializers.CharField()
    error = serializers.CharField()
    requested_by = serializers.CharField(source="requested_by.username")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


def export_response(*, many: bool = False) -> PolymorphicProxySerializer:
    """An export as any reader gets it, for the schema: identified, or (a sponsor) this module's."""
    from compliance.serializers import ExportOutput as IdentifiedExportOutput

    return PolymorphicProxySerializer(
        component_name="ExportOutputOrSponsorExportOutput",
        serializers=[IdentifiedExportOutput, ExportOutput],
        resource_type_field_name=None,
        many=many,
    )


# --------------------------------------------------------------------------- the API's views
