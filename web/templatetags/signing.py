"""``{% awaiting_signature_count user as n %}``: how many records await the user's
signature (compliance.selectors.awaiting_signature); None for a user who signs nothing."""

from __future__ import annotations

from django import template

from compliance import selectors as compliance_selectors

register = template.Library()


@register.simple_tag
def awaiting_signature_count(user) -> int | None:
    if not user.is_authenticated or not compliance_selectors.investigator_site_ids(user):
        return None
    return len(compliance_selectors.awaiting_signature(user))
