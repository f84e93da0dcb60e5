"""``{% form_token %}``: the one-time token of a form (idempotency.middleware), so a form
submitted twice (a double click, a reload, the back button) is saved once."""

from __future__ import annotations

import re
import secrets

from django import template
from django.utils.html import format_html

from idempotency.middleware import FORM_FIELD

register = template.Library()

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@register.simple_tag(takes_context=True)
def form_token(context) -> str:
    request = context.get("request")
    posted = request.POST.get(FORM_FIELD, "") if request is not None and request.method == "POST" else ""
    # A form shown again with its errors keeps its token: the refused attempt released it.
    token = posted if _TOKEN.match(posted) else secrets.token_urlsafe(24)
    return format_html('<input type="hidden" name="{}" value="{}">', FORM_FIELD, token)
