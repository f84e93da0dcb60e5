"""The record pages: the subject-by-time-point status grid, the upload history, re-filing
a scan, batch upload. Each view: look up through a site-scoped selector (404 when it is
not the user's to see), call one service, render. The rules stay in the services."""

from __future__ import annotations

from django import forms as django_forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from imaging import selectors as imaging_selectors
from imaging import tasks
from imaging.models import ScanStatus
from imaging.services import scan_refile as refile_services
from imaging.services import scan_uploads as scan_uploads_services
from trials import selectors as trial_selectors
from trials.models import SubjectStatus
from web import forms, records_queries
from web.permissions import require_write
from web.queries import sites_where
from web.views import RULE_ERRORS

PAGE_SIZE = 25


@login_required
@require_GET
def status_grid(request):
    site = request.GET.get("site", "")
    return render(
        request,
        "web/status_grid.html",
        {
            **records_queries.status_grid(request.user, site=site),
            "sites": trial_selectors.visible_sites(request.user),
            "filters": request.GET,
            "now": timezone.now(),
        },
    )


@login_required
@require_GET
def upload_history(request):
    q = request.GET
    scans = records_queries.scan_history(request.user, site=q.get("site", ""), status=q.get("status", ""))
    page = Paginator(scans, PAGE_SIZE).get_page(q.get("page"))
    refile_sites = set(sites_where(request.user, refile_services.REFILE_ROLES).values_list("id", flat=True))
    for scan in page:
        scan.can_refile = scan.subject.site_id in refile_sites and scan.status not in (  # type: ignore[attr-defined]  # for the template
            ScanStatus.VALIDATING,
            ScanStatus.RECONSTRUCTING,
        )
        upload = scan.upload
        scan.refiled = upload is not None and (  # type: ignore[attr-defined]  # for the template
            upload.subject_id != scan.subject_id or upload.hours_after_injection != scan.hours_after_injection
        )
    query = q.copy()
    query.pop("page", None)
    return render(
        request,
        "web/upload_history.html",
        {
            "page": page,
            "open_uploads": records_queries.open_uploads(request.user, site=q.get("site", ""))[:50],
            "filters": q,
            "query": query.urlencode(),
            "sites": trial_selectors.visible_sites(request.user),
            "statuses": ScanStatus.values,
            "can_batch": bool(
                sites_where(request.user, scan_uploads_services.UPLOAD_ROLES).values_list("id", flat=True)
            ),
        },
    )


class RefileForm(django_forms.Form):
    """Where the scan belongs: a subject's injection (of the scan's site), the time point, why."""

    injection = forms.ModelChoice(queryset=None, empty_label=None, label="Subject and injection")
    hours = django_forms.FloatField(label="Hours after injection", min_value=0)
    reason = django_forms.CharField(
        widget=django_forms.Textarea(attrs={"rows": 3}),
        help_text="Required: why the scan is re-filed (kept in the audit trail with the old and new filing).",
    )

    def __init__(self, *args, injections, **kwargs):
        super().__init__(*args, **kwargs)
        choice = forms._model_choice(self, "injection")
        choice.queryset = injections
        choice.label_of = lambda i: (
            f"{i.subject.code} · injection #{i.pk} · {i.batch.batch_code} · {i.administered_at:%Y-%m-%d %H:%M} UTC"
        )


@login_required
@require_http_methods(["GET", "POST"])
def scan_refile(request, pk):
    scan = get_object_or_404(imaging_selectors.scans_visible_to(request.user), pk=pk)
    require_write(request.user, refile_services.REFILE_ROLES, site=scan.subject.site)
    injections = (
        trial_selectors.injections_visible_to(request.user)
        .filter(subject__site_id=scan.subject.site_id)
        .exclude(subject__status=SubjectStatus.WITHDRAWN)
        .select_related("subject", "batch")
        .order_by("subject__code", "administered_at")
    )
    form = RefileForm(
        request.POST or None,
        injections=injections,
        initial={"injection": scan.injection_id, "hours": scan.hours_after_injection},
    )
    if request.method == "POST" and form.is_valid():
        injection = form.cleaned_data["injection"]
        try:
            refile_services.scan_refile(
                actor=request.user,
                scan=scan,
                subject=injection.subject,
                injection_id=injection.pk,
                hours_after_injection=form.cleaned_data["hours"],
                reason=form.cleaned_data["reason"],
                then=tasks.queue_next_step,
            )
        except RULE_ERRORS as exc:
            forms.apply_errors(form, exc)
        else:
            messages.success(
                request,
                f"Scan #{scan.pk} re-filed to {injection.subject.code} at {form.cleaned_data['hours']:g} h.",
            )
            return redirect("web:scan", pk=scan.pk)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "web/scan_refile.html",
        {"form": form, "scan": scan, "back": reverse("web:uploads")},
        status=status,
    )


@login_required
@require_GET
def batch_upload(request):
    """Several MDF files at once, each with its subject's injection, scanner and time point;
    each a resumable tus upload (web/static/web/tus-core.js), with its own progress."""
    sites = sites_where(request.user, scan_uploads_services.UPLOAD_ROLES)
    if not sites.exists():
        raise Http404
    injections = (
        trial_selectors.injections_visible_to(request.user)
        .filter(subject__site__in=sites)
        .exclude(subject__status=SubjectStatus.WITHDRAWN)
        .select_related("subject__site", "batch")
        .order_by("subject__site__code", "subject__code", "administered_at")
    )
    scanners = imaging_selectors.scanners_visible_to(request.user).filter(site__in=sites).order_by("site__code", "name")
    return render(
        request,
        "web/batch_upload.html",
        {
            "injections": injections,
            "scanners": scanners,
            "chunk_size": settings.IMAGING_UPLOAD_BROWSER_CHUNK_BYTES,
        },
    )
