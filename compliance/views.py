"""Server-rendered pages: sign-in with the one-time-password step, and the audit browser."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login

from audit.actions import AuditAction
from compliance import selectors, twofactor
from compliance.services.audit_trail import audit_trail_verify
from config.errors import RuleViolation
from config.ids import parse_id
from trials.models import Site, Subject


def _safe_next(request, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return default


class LoginView(auth_views.LoginView):
    """Step one: username and password (django-axes counts failures and locks out)."""

    template_name = "registration/login.html"
    redirect_authenticated_user = False

    def get_success_url(self):
        target = super().get_success_url()
        if twofactor.requires_2fa(self.request.user):
            return f"{reverse('accounts:otp')}?next={target}"
        return target


class OtpForm(forms.Form):
    otp_token = forms.CharField(
        label="Authenticator code",
        max_length=8,
        strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


@login_required
@require_http_methods(["GET", "POST"])
def otp_view(request):
    """Step two: the 6-digit TOTP code, for roles that read identifiable data."""
    target = _safe_next(request, settings.LOGIN_REDIRECT_URL)
    if not twofactor.requires_2fa(request.user) or request.user.is_verified():
        return redirect(target)
    enrolled = twofactor.has_confirmed_device(request.user)
    form = OtpForm(request.POST or None)
    if request.method == "POST" and enrolled and form.is_valid():
        device = twofactor.check_otp(request.user, form.cleaned_data["otp_token"], via="login_form")
        if device is not None:
            otp_login(request, device)
            return redirect(target)
        form.add_error("otp_token", "The code is wrong or was already used.")
    return render(
        request,
        "registration/otp.html",
        {"form": form, "enrolled": enrolled, "next": target},
        status=200 if request.method == "GET" or form.is_valid() else 400,
    )


@login_required
def home(request):
    return render(request, "compliance/home.html", {"audit_trials": selectors.audit_trial_ids(request.user)})


@login_required
@require_http_methods(["GET", "POST"])
def audit_browser(request):
    """Monitors and auditors: filter the trail, see old and new values, verify the chain."""
    from trials.models import Trial

    trial_ids = selectors.audit_trial_ids(request.user)
    if not trial_ids:
        raise PermissionDenied
    trials = Trial.objects.filter(pk__in=trial_ids)
    verification = None
    if request.method == "POST":
        trial_id = parse_id(request.POST.get("trial"))
        trial = None if trial_id is None else trials.filter(pk=trial_id).first()
        if trial is None:
            raise PermissionDenied
        try:
            verification = audit_trail_verify(actor=request.user, trial=trial)
        except RuleViolation as exc:
            messages.error(request, exc.message)
    q = request.GET
    events = selectors.audit_events_visible_to(
        request.user,
        subject=q.get("subject"),
        username=q.get("user"),
        action=q.get("action"),
        date_from=selectors.parse_date(q.get("date_from")),
        date_to=selectors.parse_date(q.get("date_to")),
    )
    page = Paginator(events, 50).get_page(q.get("page"))
    # Subject codes for the page in one query: the trail stores plain ids (it must never
    # depend on the records it describes), people read codes.
    codes = dict(Subject.objects.filter(pk__in={e.subject_id for e in page if e.subject_id}).values_list("pk", "code"))
    # An event of a site's is shown on that site's clock; one of no site's (the platform's) in UTC.
    sites = Site.objects.in_bulk({e.site_id for e in page if e.site_id})
    rows = [
        {
            "event": e,
            "site": sites.get(e.site_id),
            "subject_code": codes.get(e.subject_id, str(e.subject_id)) if e.subject_id else "",
            "changes": _change_rows(e.changes),
        }
        for e in page
    ]
    query = q.copy()
    query.pop("page", None)
    return render(
        request,
        "compliance/audit_browser.html",
        {
            "page": page,
            "rows": rows,
            "trials": trials,
            "verification": verification,
            "filters": q,
            "actions": [a.name for a in AuditAction],
            "query": query.urlencode(),
        },
    )


def _change_rows(changes) -> list[dict]:
    """``{field: [old, new]}`` as rows; other payload shapes as plain values."""
    rows = []
    for name, value in sorted((changes or {}).items()):
        if isinstance(value, list) and len(value) == 2:
            rows.append({"field": name, "old": value[0], "new": value[1], "pair": True})
        else:
            rows.append({"field": name, "value": value, "pair": False})
    return rows
