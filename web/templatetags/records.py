"""``{% subject_corrections subject %}`` and ``{% record_corrections record subject %}``:
the correction history of a record, on the record's own page (web.records_queries)."""

from __future__ import annotations

from django import template

from imaging import selectors as imaging_selectors
from imaging.services.scan_refile import REFILE_ROLES
from trials import selectors as trial_selectors
from web import records_queries
from web.permissions import may_write

register = template.Library()


@register.inclusion_tag("web/_corrections.html", takes_context=True)
def subject_corrections(context, subject):
    """The subject's own corrections, its identity's, and those of its consents,
    injections and scans (each looked up through the user's scoped selectors)."""
    user = context["request"].user
    records = [
        subject,
        *trial_selectors.consents_visible_to(user).filter(subject=subject),
        *trial_selectors.injections_visible_to(user).filter(subject=subject),
        *imaging_selectors.scans_visible_to(user).prefetch_related(None).filter(subject=subject),
    ]
    return {"corrections": records_queries.corrections(user, records, subject=subject), "what": "this subject"}


@register.inclusion_tag("web/_corrections.html", takes_context=True)
def record_corrections(context, record, subject=None):
    user = context["request"].user
    return {"corrections": records_queries.corrections(user, [record], subject=subject), "what": "this record"}


@register.simple_tag(takes_context=True)
def may_refile(context, scan) -> bool:
    """Whether the user may re-file ``scan`` (the service's own role rule), for the link."""
    return may_write(context["request"].user, REFILE_ROLES, site=scan.subject.site)
