"""The investigator's "awaiting my signature" list (issue #18 item 8): the records at
their sites whose signature is required and missing or invalidated, each linked to its
sign form. A read: nothing is written (compliance.selectors.awaiting_signature)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from compliance import selectors as compliance_selectors


def sign_url(item: compliance_selectors.AwaitingSignature) -> str:
    """The page holding the item's sign form, at the form."""
    if item.scan_id is None:
        return reverse("web:subject", args=[item.subject_id]) + "#h-sign"
    return reverse("web:scan", args=[item.scan_id]) + "#h-sign"


@login_required
@require_GET
def awaiting_signature(request):
    items = compliance_selectors.awaiting_signature(request.user)
    return render(
        request,
        "web/awaiting_signature.html",
        {
            "items": [(item, sign_url(item)) for item in items],
            "signs": bool(compliance_selectors.investigator_site_ids(request.user)),
        },
    )
