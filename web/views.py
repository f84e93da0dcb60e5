"""Server-rendered pages. Each view: look the object up through a site-scoped selector
(404 when it is not the user's to see), translate the form, call one service, render.
Rules and audit events stay in the services."""

from __future__ import annotations

import contextlib
import tempfile
from collections import defaultdict
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from compliance import selectors as compliance_selectors
from compliance import signatures, sponsor
from compliance import tasks as compliance_tasks
from compliance.services import exports as exports_services
from config.errors import RuleViolation
from imaging import dicom_export, pacs, tasks
from imaging import selectors as imaging_selectors
from imaging.models import PacsDestination, Scan
from imaging.services import downloads as downloads_services
from imaging.services import rois as rois_services
from imaging.services import scan_claims as scan_claims_services
from imaging.services import scan_uploads as scan_uploads_services
from imaging.services import scanners as scanners_services
from trials import selectors as trial_selectors
from trials import site_time
from trials.models import CellBatch, LotQcStatus, Role, SubjectStatus
from trials.permissions import access
from trials.services import batches as batches_services
from trials.services import consent as consent_services
from trials.services import identity as identity_services
from trials.services import injections as injections_services
from trials.services import lots as lots_services
from trials.services import subjects as subjects_services
from trials.services.batches import LABELLING_FIELDS
from web import forms, identity_views, live_data, plots, queries, viewer_views, volume
from web import operations as operations_page
from web.permissions import may_export, may_write, require_trial_resource_write, require_write

RULE_ERRORS = (RuleViolation, ValidationError)
PAGE_SIZE = 20


def _submit(form, call):
    """Run ``call`` when the form is valid; a refusal lands on the form. The result, or None."""
    if not form.is_valid():
        return None
    try:
        return call(form.cleaned_data)
    except RULE_ERRORS as exc:
        forms.apply_errors(form, exc)
        return None


def _with_task(queue, write):
    """``write()`` and the task ``queue`` records for its result (the outbox), in one transaction."""
    with transaction.atomic():
        obj = write()
        queue(obj)
        return obj


def _form_page(request, template: str, form, **context):
    status = 400 if request.method == "POST" else 200
    return render(request, template, {"form": form, **context}, status=status)


# --------------------------------------------------------------------------- dashboard


@login_required
@require_GET
def dashboard(request):
    if sponsor.applies_to(request.user):
        return render(request, "web/sponsor_dashboard.html", queries.sponsor_dashboard(request.user))
    return render(request, "web/dashboard.html", queries.dashboard(request.user))


# --------------------------------------------------------------------------- subjects


@login_required
@require_GET
def subject_list(request):
    q = request.GET
    rows = queries.subject_rows(request.user, search=q.get("q", ""), site=q.get("site", ""), status=q.get("status", ""))
    page = Paginator(rows, PAGE_SIZE).get_page(q.get("page"))
    query = q.copy()
    query.pop("page", None)
    return render(
        request,
        "web/subject_list.html",
        {
            "page": page,
            "filters": q,
            "query": query.urlencode(),
            "sites": trial_selectors.visible_sites(request.user),
            "statuses": SubjectStatus.choices,
            "can_enrol": queries.sites_where(request.user, access.ENROL_ROLES).exists(),
        },
    )


def _subject(request, pk):
    return get_object_or_404(trial_selectors.subjects_visible_to(request.user), pk=pk)


@login_required
@require_GET
def subject_detail(request, pk):
    return _subject_page(request, _subject(request, pk), forms.SignForm())


def _roi_form(request, subject, data=None):
    scans = (
        imaging_selectors.scans_visible_to(request.user)
        .prefetch_related(None)
        .filter(subject=subject)
        .order_by("hours_after_injection", "id")
    )
    return forms.RoiDefineForm(data, scans=scans, prefix="roi")


def _subject_page(request, subject, sign_form, status=200, roi_form=None):
    timeline = queries.subject_timeline(request.user, subject)
    retention, groups = plots.plot_data(
        imaging_selectors.time_course(subject),
        off_target_totals={s.pk: (s.metrics_summary or {}).get("off_target_percent") for s in timeline["scans"]},
    )
    roles = access.roles_at(request.user, subject.site)
    user, site = request.user, subject.site
    return render(
        request,
        "web/subject_detail.html",
        {
            "subject": subject,
            **timeline,
            "retention_svg": plots.retention_curve(retention),
            "retention": retention,
            "off_target_svg": plots.off_target_bars(
                groups, threshold_percent=float(subject.trial.off_target_alert_percent)
            ),
            "off_target_groups": groups,
            # Each link only for those whose role may save that form (the services' own rule).
            "can_change_subject": may_write(user, access.ENROL_ROLES, site=site),
            "can_consent": may_write(user, access.CONSENT_ROLES, site=site),
            "can_inject": may_write(user, access.INJECTION_ROLES, site=site),
            "can_upload": may_write(user, scan_uploads_services.UPLOAD_ROLES, site=site),
            "is_investigator": Role.INVESTIGATOR in roles,
            "sign_form": sign_form,
            "rois": list(
                imaging_selectors.rois_visible_to(request.user)
                .filter(subject=subject)
                .select_related("scan", "created_by")
                .order_by("scan_id", "kind", "name")
            ),
            "can_define_rois": may_write(user, rois_services.ROI_ROLES, site=site),
            # Live sessions of each injection (the timeline), and who may open one.
            "live_sessions": list(
                live_data.live_sessions_visible_to(user).filter(subject=subject).order_by("created_at")
            ),
            "can_stream": may_write(user, live_data.STREAM_ROLES, site=site),
            "roi_form": roi_form or _roi_form(request, subject),
            # Injected with a tracer no calibration at the site fits: every upload will be refused.
            "calibration_gaps": _calibration_gaps(site, [i.batch.nanoparticle_lot for i in timeline["injections"]]),
            "gap_site": site,
            **identity_views.identity_panel(user, subject),
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def subject_enrol(request):
    sites = queries.sites_where(request.user, access.ENROL_ROLES)
    if not sites.exists():
        raise Http404
    form = forms.SubjectEnrolForm(request.POST or None, sites=sites)

    def enrol(data):
        with transaction.atomic():  # the subject and their identity, or neither
            subject = subjects_services.subject_enrol(
                actor=request.user, site=data["site"], enrolment_date=data["enrolment_date"], status=data["status"]
            )
            if data.get("full_name"):
                identity_services.subject_identity_set(
                    actor=request.user,
                    subject=subject,
                    full_name=data["full_name"],
                    date_of_birth=data["date_of_birth"],
                    medical_record_number=data["medical_record_number"],
                )
        return subject

    if request.method == "POST" and (subject := _submit(form, enrol)):
        messages.success(request, f"Subject {subject.code} enrolled.")
        return redirect("web:consent-sign", pk=subject.pk)
    return _form_page(request, "web/form.html", form, title="Enrol a subject", back=reverse("web:subjects"))


@login_required
@require_http_methods(["GET", "POST"])
def consent_sign(request, pk):
    subject = _subject(request, pk)
    require_write(request.user, access.CONSENT_ROLES, site=subject.site)
    documents = (
        trial_selectors.consent_documents_visible_to(request.user)
        .filter(trial=subject.trial)
        .order_by("-effective_date")
    )
    form = forms.ConsentSignForm(request.POST or None, documents=documents, site=subject.site)
    if request.method == "POST" and _submit(
        form,
        lambda d: consent_services.consent_sign(
            actor=request.user, subject=subject, document=d["document"], scopes=d["scopes"], signed_at=d["signed_at"]
        ),
    ):
        messages.success(request, f"Consent recorded for {subject.code}.")
        return redirect("web:subject", pk=subject.pk)
    return _form_page(
        request,
        "web/form.html",
        form,
        title=f"Record consent · {subject.code}",
        subject=subject,
        back=reverse("web:subject", args=[subject.pk]),
    )


@login_required
@require_http_methods(["GET", "POST"])
def consent_withdraw(request, pk):
    consent = get_object_or_404(trial_selectors.consents_visible_to(request.user), pk=pk)
    subject = consent.subject
    require_write(request.user, access.CONSENT_ROLES, site=subject.site)
    form = forms.ConsentWithdrawForm(request.POST or None, consent=consent)
    if request.method == "POST" and _submit(
        form,
        lambda d: consent_services.consent_withdraw(
            actor=request.user, consent=consent, scopes=d["scopes"], reason=d["reason"]
        ),
    ):
        messages.success(request, f"Withdrawal recorded for {subject.code}.")
        return redirect("web:subject", pk=subject.pk)
    return _form_page(
        request,
        "web/form.html",
        form,
        title=f"Withdraw consent · {subject.code}",
        subject=subject,
        back=reverse("web:subject", args=[subject.pk]),
        danger=True,
    )


@login_required
@require_http_methods(["GET", "POST"])
def injection_record(request, pk):
    subject = _subject(request, pk)
    require_write(request.user, access.INJECTION_ROLES, site=subject.site)
    # Only what the service accepts: released, for this subject (allogeneic or their own cells), lot in date.
    batches = (
        trial_selectors.batches_visible_to(request.user)
        .filter(injections_services.injectable_batches(subject, site_time.today(subject.site.time_zone)))
        .order_by("batch_code")
    )
    staff = queries.clinical_staff(subject.site)
    form = forms.InjectionForm(
        request.POST or None,
        batches=batches,
        staff=staff,
        initial={"administered_by": request.user.pk},
        site=subject.site,
    )

    def record(d):
        return injections_services.injection_record(
            actor=request.user,
            subject=subject,
            batch=d["batch"],
            administered_cells=d["administered_cells"],
            volume_ml=d["volume_ml"],
            route=d["route"],
            anatomical_target=d["anatomical_target"],
            administered_at=d["administered_at"],
            administered_by=d["administered_by"],
            verified_by=d["verified_by"],
            verifier_password=d["verifier_password"],
            planned_duration_s=d["planned_duration_s"],
        )

    if request.method == "POST" and (injection := _submit(form, record)):
        messages.success(request, f"Injection recorded for {subject.code}.")
        if gaps := _calibration_gaps(subject.site, [injection.batch.nanoparticle_lot]):
            messages.warning(request, _gap_message(subject.site, gaps))
        return redirect("web:subject", pk=subject.pk)
    return _form_page(
        request,
        "web/form.html",
        form,
        title=f"Record an injection · {subject.code}",
        subject=subject,
        back=reverse("web:subject", args=[subject.pk]),
        # Said before the injection is recorded: the batches offered whose tracer no calibration fits.
        calibration_gaps=_calibration_gaps(
            subject.site, [b.nanoparticle_lot for b in batches.select_related("nanoparticle_lot")]
        ),
        gap_site=subject.site,
    )


@login_required
@require_http_methods(["POST"])
def subject_sign(request, pk):
    subject = _subject(request, pk)
    form = forms.SignForm(request.POST)
    if _submit(
        form,
        lambda d: signatures.signature_apply(
            signer=request.user, password=d["password"], obj=subject, meaning=d["meaning"]
        ),
    ):
        messages.success(request, f"Subject visit {subject.code} signed.")
        return redirect("web:subject", pk=subject.pk)
    return _subject_page(request, subject, form, status=400)


# --------------------------------------------------------------------------- lots and batches


@login_required
@require_GET
def product_list(request):
    user = request.user
    writable_sites = queries.sites_where(user, access.PRODUCT_ROLES)
    lots = list(trial_selectors.lots_visible_to(user).order_by("expiry_date"))
    batches = list(trial_selectors.batches_visible_to(user).order_by("batch_code"))
    site_ids = set(writable_sites.values_list("id", flat=True))
    # Lots are the trial's, changed by a trial-level role; batches their site's: as in the services.
    trial_ids = set(queries.trials_where_trial_wide(user, access.TRIAL_RESOURCE_ROLES).values_list("id", flat=True))
    for lot in lots:
        lot.can_write = lot.trial_id in trial_ids  # type: ignore[attr-defined]  # for the template
    for batch in batches:
        batch.can_write = batch.site_id in site_ids  # type: ignore[attr-defined]  # for the template
    return render(
        request,
        "web/products.html",
        {
            "lots": lots,
            "batches": batches,
            "can_write": bool(site_ids),
            "can_write_lots": bool(trial_ids),
            "today": queries.timezone.localdate(),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def lot_register(request):
    trials = queries.trials_where_trial_wide(request.user, access.TRIAL_RESOURCE_ROLES)
    if not trials.exists():
        raise Http404
    form = forms.LotRegisterForm(request.POST or None, request.FILES or None, trials=trials, user=request.user)
    if request.method == "POST" and (
        lot := _submit(form, lambda d: lots_services.lot_register(actor=request.user, **form.service_arguments()))
    ):
        messages.success(request, f"Lot {lot.lot_number} registered (quarantined until QC release).")
        return redirect("web:products")
    if request.method == "POST":
        form.keep_certificate()  # refused: the file need not be attached again
    return _form_page(
        request,
        "web/form.html",
        form,
        title="Register a nanoparticle lot",
        back=reverse("web:products"),
        multipart=True,
    )


@login_required
@require_http_methods(["GET", "POST"])
def lot_qc(request, pk):
    lot = get_object_or_404(trial_selectors.lots_visible_to(request.user), pk=pk)
    require_trial_resource_write(request.user, lot.trial)
    form = forms.LotQcForm(request.POST or None, initial={"qc_status": LotQcStatus.RELEASED})
    if request.method == "POST" and _submit(
        form,
        lambda d: lots_services.lot_set_qc_status(
            actor=request.user, lot=lot, qc_status=d["qc_status"], reason=d["reason"], confirm=d["confirm"]
        ),
    ):
        messages.success(request, f"Lot {lot.lot_number}: QC status changed.")
        return redirect("web:products")
    return _form_page(
        request, "web/form.html", form, title=f"QC status · lot {lot.lot_number}", back=reverse("web:products")
    )


@login_required
@require_http_methods(["GET", "POST"])
def batch_register(request):
    sites = queries.sites_where(request.user, access.PRODUCT_ROLES)
    if not sites.exists():
        raise Http404
    subjects = trial_selectors.subjects_visible_to(request.user).filter(site__in=sites).order_by("code")
    form = forms.BatchRegisterForm(request.POST or None, sites=sites, subjects=subjects)
    if request.method == "POST" and (
        batch := _submit(form, lambda d: batches_services.batch_register(actor=request.user, **d))
    ):
        messages.success(request, f"Batch {batch.batch_code} registered.")
        return redirect("web:products")
    return _form_page(request, "web/form.html", form, title="Register a cell batch", back=reverse("web:products"))


def _batch(request, pk):
    return get_object_or_404(trial_selectors.batches_visible_to(request.user), pk=pk)


@login_required
@require_http_methods(["GET", "POST"])
def batch_label(request, pk):
    batch = _batch(request, pk)
    require_write(request.user, access.PRODUCT_ROLES, site=batch.site)
    # Only lots the service accepts: released and in date at the batch's site today.
    lots = (
        trial_selectors.lots_visible_to(request.user)
        .filter(lots_services.usable_lots(site_time.today(batch.site.time_zone)), trial=batch.trial)
        .order_by("lot_number")
    )
    form = forms.BatchLabelForm(request.POST or None, lots=lots, site=batch.site)
    if request.method == "POST" and (
        labelled := _submit(form, lambda d: batches_services.batch_label(actor=request.user, batch=batch, **d))
    ):
        messages.success(request, f"Labelling of batch {batch.batch_code} recorded.")
        # The first step where the tracer and the site are both known: say it now if no calibration fits.
        if gaps := _calibration_gaps(batch.site, [labelled.nanoparticle_lot]):
            messages.warning(request, _gap_message(batch.site, gaps))
        return redirect("web:products")
    return _form_page(
        request,
        "web/form.html",
        form,
        title=f"Record labelling · batch {batch.batch_code}",
        back=reverse("web:products"),
    )


@login_required
@require_http_methods(["GET", "POST"])
def batch_release(request, pk):
    batch = _batch(request, pk)
    require_write(request.user, access.PRODUCT_ROLES, site=batch.site)
    form = forms.BatchReleaseForm(request.POST or None, initial={"release_status": CellBatch.ReleaseStatus.RELEASED})
    if request.method == "POST" and _submit(
        form, lambda d: batches_services.batch_set_release_status(actor=request.user, batch=batch, **d)
    ):
        messages.success(request, f"Batch {batch.batch_code}: release status changed.")
        return redirect("web:products")
    return _form_page(
        request, "web/form.html", form, title=f"Release · batch {batch.batch_code}", back=reverse("web:products")
    )


# --------------------------------------------------------------------------- scans


@login_required
@require_GET
def scan_upload(request, pk):
    subject = _subject(request, pk)
    require_write(request.user, scan_uploads_services.UPLOAD_ROLES, site=subject.site)
    injections = (
        trial_selectors.injections_visible_to(request.user).filter(subject=subject).order_by("-administered_at")
    )
    scanners = imaging_selectors.scanners_visible_to(request.user).filter(site=subject.site)
    form = forms.UploadForm(injections=injections, scanners=scanners)
    gaps = _calibration_gaps(
        subject.site, [i.batch.nanoparticle_lot for i in injections.select_related("batch__nanoparticle_lot")]
    )
    return render(
        request,
        "web/scan_upload.html",
        {
            "subject": subject,
            "form": form,
            "chunk_size": settings.IMAGING_UPLOAD_BROWSER_CHUNK_BYTES,
            "calibration_gaps": gaps,
            "gap_site": subject.site,
        },
    )


# --------------------------------------------------------------------------- calibrations


def _calibration_gaps(site, lots) -> list:
    """The tracers (lots) of ``lots`` that no active calibration at ``site`` fits: scan
    uploads for them will be refused. The pages say so where the dead end becomes certain."""
    return scanners_services.tracers_without_calibration(site, lots)


def _gap_message(site, lots) -> str:
    tracers = ", ".join(f"{lot.product} (lot {lot.lot_number})" for lot in lots)
    return (
        f"No active calibration for tracer {tracers} on the scanners of site {site.code}: scan uploads "
        f"will be refused. Imaging staff can register one at {reverse('web:calibration-register')}."
    )


@login_required
@require_GET
def calibration_library(request):
    user = request.user
    scanners = list(imaging_selectors.scanners_visible_to(user).order_by("site__code", "name"))
    by_scanner = defaultdict(list)
    matrices = (
        imaging_selectors.system_matrices_visible_to(user)
        .select_related("registered_by")
        .order_by("scanner_id", "-active", "-created_at")
    )
    for sm in matrices:
        by_scanner[sm.scanner_id].append(sm)
    # Each action only for those whose role may do it (the services' own rule).
    retire_sites = set(queries.sites_where(user, scanners_services.LIBRARY_ROLES).values_list("id", flat=True))
    register_sites = set(queries.sites_where(user, scanners_services.REGISTER_ROLES).values_list("id", flat=True))
    for scanner in scanners:
        scanner.calibrations = by_scanner.get(scanner.pk, [])  # type: ignore[attr-defined]  # for the template
        scanner.can_retire = scanner.site_id in retire_sites  # type: ignore[attr-defined]  # for the template
        scanner.can_register = scanner.site_id in register_sites  # type: ignore[attr-defined]  # for the template
    return render(request, "web/calibrations.html", {"scanners": scanners, "can_register": bool(register_sites)})


@contextlib.contextmanager
def _stored(uploaded):
    """The path of an uploaded file on disk: Django's temporary file when it streamed one
    (over FILE_UPLOAD_MAX_MEMORY_SIZE), else a temporary copy of the bytes it kept in memory."""
    if hasattr(uploaded, "temporary_file_path"):
        yield Path(uploaded.temporary_file_path())
        return
    with tempfile.NamedTemporaryFile(suffix=".mdf") as copy:
        for chunk in uploaded.chunks():
            copy.write(chunk)
        copy.flush()
        yield Path(copy.name)


@login_required
@require_http_methods(["GET", "POST"])
def calibration_register(request):
    user = request.user
    sites = queries.sites_where(user, scanners_services.REGISTER_ROLES)
    if not sites.exists():
        raise Http404
    scanners = imaging_selectors.scanners_visible_to(user).filter(site__in=sites).order_by("site__code", "name")
    lots = (
        trial_selectors.lots_visible_to(user)
        .filter(trial_id__in=sites.values("trial_id"))
        .order_by("product", "lot_number")
    )
    form = forms.CalibrationRegisterForm(
        request.POST or None,
        request.FILES or None,
        scanners=scanners,
        lots=lots,
        initial={"scanner": request.GET.get("scanner")},
    )

    def register(d):
        with _stored(d["file"]) as path:
            return scanners_services.system_matrix_register(
                actor=user,
                scanner=d["scanner"],
                name=d["name"],
                tracer_product=d["tracer_product"],
                source_path=path,
                nanoparticle_lot=d["nanoparticle_lot"],
            )

    if request.method == "POST" and (sm := _submit(form, register)):
        grid = "×".join(str(n) for n in sm.grid_size)
        median = sm.snr_summary.get("median")
        messages.success(
            request,
            f"Calibration #{sm.pk} {sm.name} registered for scanner {sm.scanner.name}: valid {grid} grid, "
            f"{sm.frequencies_count:,} frequencies × {sm.receive_channels} channel(s)"
            + (f", median SNR {median:.1f}" if median is not None else "")
            + f", tracer {sm.tracer_product}.",
        )
        return redirect(reverse("web:calibrations") + f"#calibration-{sm.pk}")
    return _form_page(
        request,
        "web/form.html",
        form,
        title="Register a calibration",
        intro="The file is validated with recon before it enters the library; a refused file is not kept.",
        back=reverse("web:calibrations"),
        multipart=True,
    )


@login_required
@require_http_methods(["GET", "POST"])
def calibration_retire(request, pk):
    sm = get_object_or_404(
        imaging_selectors.system_matrices_visible_to(request.user).select_related("scanner__site"), pk=pk
    )
    require_write(request.user, scanners_services.LIBRARY_ROLES, site=sm.scanner.site)
    form = forms.CalibrationRetireForm(request.POST or None)
    if request.method == "POST" and _submit(
        form,
        lambda d: scanners_services.system_matrix_retire(actor=request.user, system_matrix=sm, reason=d["reason"]),
    ):
        messages.success(request, f"Calibration #{sm.pk} {sm.name} retired: new uploads no longer match it.")
        return redirect(reverse("web:calibrations") + f"#calibration-{sm.pk}")
    return _form_page(
        request,
        "web/form.html",
        form,
        title=f"Retire calibration #{sm.pk} · {sm.name}",
        intro="New scan uploads will no longer match it; scans already reconstructed with it keep it.",
        back=reverse("web:calibrations"),
        danger=True,
    )


def _scan(request, pk) -> Scan:
    return get_object_or_404(
        imaging_selectors.scans_visible_to(request.user).select_related("injection__batch", "subject__trial"), pk=pk
    )


@login_required
@require_GET
def scan_detail(request, pk):
    return _scan_page(request, _scan(request, pk), forms.SignForm())


def _pacs_destinations(scan):
    # Destinations are the trial's, and the scan (hence its trial) is already the user's to see.
    return PacsDestination.objects.filter(trial_id=scan.subject.trial_id, active=True).order_by("name")


def _scan_page(request, scan, sign_form, status=200, export_form=None, pacs_form=None):
    reconstruction = queries.reconstruction_of(scan)
    roles = access.roles_at(request.user, scan.subject.site)
    exportable = reconstruction is not None and scan.status == Scan.Status.QUANTIFIED
    may_identified = exportable and may_export(request.user, scan, deidentified=False)
    context = {
        "scan": scan,
        "reconstruction": reconstruction,
        "measurements": list(scan.measurements.all()),
        "final": scan.status in queries.FINAL_STATUSES,
        "is_investigator": Role.INVESTIGATOR in roles,
        "sign_form": sign_form,
        "can_retry": (
            scan.status == Scan.Status.FAILED
            and scan.retryable
            and may_write(request.user, scan_uploads_services.UPLOAD_ROLES, site=scan.subject.site)
        ),
        "may_export_identified": may_identified,
        "may_export_deidentified": exportable and may_export(request.user, scan, deidentified=True),
        "export_form": export_form or forms.ScanExportForm(),
        "pacs_form": pacs_form
        or (forms.PacsSendForm(destinations=_pacs_destinations(scan)) if may_identified else None),
    }
    if reconstruction is not None:
        vol = volume.load(reconstruction)
        masks = volume.roi_masks(rois_services.rois_for(scan), vol.grid)
        nz, ny, nx = vol.shape
        context.update(
            {
                "planes": [
                    {"name": name, "label": label, "count": vol.shape[axis], "middle": vol.shape[axis] // 2}
                    for name, (axis, label, _, _) in volume.PLANES.items()
                ],
                "colour_bar": volume.colour_bar(vol.vmax),
                "legend": volume.roi_legend(masks),
                "grid": {"nx": nx, "ny": ny, "nz": nz},
                # Its place among the scan's reconstructions: ``attempt`` counts the pipeline's
                # claims (validation included), so a first reconstruction has attempt 2.
                "reconstruction_number": scan.reconstructions.filter(attempt__lte=reconstruction.attempt).count(),
                "reconstruction_count": scan.reconstructions.count(),
                "signatures": signatures.signatures_verify(reconstruction, actor=request.user),
            }
        )
        context.update(viewer_views.tools_context(request.user, scan))
    return render(request, "web/scan_detail.html", context, status=status)


@login_required
@require_GET
def scan_image(request, pk, plane, index=None):
    scan = _scan(request, pk)
    reconstruction = queries.reconstruction_of(scan)
    if reconstruction is None or (plane != "mip" and plane not in volume.PLANES):
        raise Http404
    vol = volume.load(reconstruction)
    masks = volume.roi_masks(rois_services.rois_for(scan), vol.grid)
    response = HttpResponse(volume.render_png(vol, plane, index, masks), content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    return response


@login_required
@require_GET
def scan_dicom(request, pk):
    scan = _scan(request, pk)
    reconstruction = queries.reconstruction_of(scan)
    if reconstruction is None or scan.status != Scan.Status.QUANTIFIED:
        raise Http404
    try:
        # Role check and FILE_DOWNLOADED audit event, as for the MDF downloads.
        downloads_services.file_download_record(
            actor=request.user, scan=scan, which="dicom_study", path=f"built from {reconstruction.file}"
        )
    except RuleViolation as exc:
        raise Http404 from exc
    content = dicom_export.study_zip(scan)
    response = HttpResponse(content, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{scan.subject.code}-scan{scan.pk}-dicom.zip"'
    return response


@login_required
@require_http_methods(["POST"])
def scan_sign(request, pk):
    scan = _scan(request, pk)
    reconstruction = queries.reconstruction_of(scan)
    if reconstruction is None or scan.status != Scan.Status.QUANTIFIED:
        raise Http404
    form = forms.SignForm(request.POST)
    if _submit(
        form,
        lambda d: signatures.signature_apply(
            signer=request.user, password=d["password"], obj=reconstruction, meaning=d["meaning"]
        ),
    ):
        messages.success(request, f"Results of scan #{scan.pk} signed.")
        return redirect("web:scan", pk=scan.pk)
    return _scan_page(request, scan, form, status=400)


@login_required
@require_GET
def scan_list(request):
    q = request.GET
    rows = queries.scan_rows(
        request.user,
        search=q.get("q", ""),
        site=q.get("site", ""),
        status=q.get("status", ""),
        hours=q.get("hours", ""),
    )
    page = Paginator(rows, PAGE_SIZE).get_page(q.get("page"))
    query = q.copy()
    query.pop("page", None)
    return render(
        request,
        "web/scan_list.html",
        {
            "page": page,
            "filters": q,
            "query": query.urlencode(),
            "sites": trial_selectors.visible_sites(request.user),
            "statuses": Scan.Status.values,
            "time_points": queries.scan_time_points(request.user),
        },
    )


@login_required
@require_http_methods(["POST"])
def scan_retry(request, pk):
    scan = _scan(request, pk)
    require_write(request.user, scan_uploads_services.UPLOAD_ROLES, site=scan.subject.site)
    try:
        with transaction.atomic():  # the retry and its task (the outbox), together
            retried = scan_claims_services.scan_retry(actor=request.user, scan=scan)
            tasks.queue_next_step(retried)
    except RULE_ERRORS as exc:
        messages.error(request, getattr(exc, "message", None) or "; ".join(getattr(exc, "messages", [str(exc)])))
    else:
        messages.success(request, f"Scan #{scan.pk} sent back for processing.")
    return redirect("web:scan", pk=scan.pk)


@login_required
@require_http_methods(["POST"])
def scan_export(request, pk):
    scan = _scan(request, pk)
    # 404 to those who may export neither study; which kind a role may have stays the service's
    # refusal, next to the buttons (an auditor may have the de-identified one only).
    if not (may_export(request.user, scan, deidentified=True) or may_export(request.user, scan, deidentified=False)):
        raise Http404
    form = forms.ScanExportForm(request.POST)
    if export := _submit(
        form,
        lambda d: _with_task(
            compliance_tasks.queue_export,
            lambda: exports_services.export_request(actor=request.user, kind=d["kind"], scan=scan),
        ),
    ):
        messages.success(
            request, f"Export #{export.pk} ({export.get_kind_display()}) requested: it is built in the background."
        )
        return redirect("web:exports")
    return _scan_page(request, scan, forms.SignForm(), status=400, export_form=form)


@login_required
@require_http_methods(["POST"])
def scan_pacs_send(request, pk):
    scan = _scan(request, pk)
    if not may_export(request.user, scan, deidentified=False):
        raise Http404
    form = forms.PacsSendForm(request.POST, destinations=_pacs_destinations(scan))
    if send := _submit(
        form,
        lambda d: _with_task(
            tasks.queue_send,
            lambda: pacs.dicom_send_request(actor=request.user, scan=scan, destination=d["destination"]),
        ),
    ):
        messages.success(request, f"Sending scan #{scan.pk} to {send.destination.name}: it is sent in the background.")
        return redirect("web:exports")
    return _scan_page(request, scan, forms.SignForm(), status=400, pacs_form=form)


# --------------------------------------------------------------------------- auditors


@login_required
@require_http_methods(["GET", "POST"])
def exports(request):
    user = request.user
    trials = trial_selectors.visible_trials(user)
    if not trials.exists():
        raise Http404
    deidentified = sponsor.applies_to(user)
    keys = sponsor.Keys()
    form = forms.ExportRequestForm(
        request.POST or None,
        trials=trials,
        sites=trial_selectors.visible_sites(user),
        site_label=keys.site if deidentified else None,
    )
    if request.method == "POST" and (
        export := _submit(
            form,
            lambda d: _with_task(
                compliance_tasks.queue_export,
                lambda: exports_services.export_request(actor=user, kind=d["kind"], trial=d["trial"], site=d["site"]),
            ),
        )
    ):
        messages.success(request, f"Export #{export.pk} requested: it is built in the background.")
        return redirect("web:exports")
    items = list(
        exports_services.exports_visible_to(user).select_related("subject__site").order_by("-created_at", "-id")[:50]
    )
    for export in items:  # a sponsor's scan export names the subject by pseudonym
        export.scope_text = sponsor.export_scope(keys, export) if deidentified else export.scope_label
        # A site's export on its clock; a trial's, or any for a sponsor (the zone would name the site), in UTC.
        export.clock_site = None if deidentified else (export.site or (export.subject.site if export.subject else None))
    sends = (
        []
        if deidentified
        else list(
            imaging_selectors.dicom_sends_visible_to(user)
            .select_related("scan__subject__site")
            .order_by("-created_at", "-id")[:50]
        )
    )
    pending = any(e.status in ("queued", "running") for e in [*items, *sends])
    return render(
        request,
        "web/exports.html",
        {
            "form": form,
            "exports": items,
            "sends": sends,
            "pending": pending,
            "audit_trials": compliance_selectors.audit_trial_ids(user),
        },
        status=400 if request.method == "POST" else 200,
    )


@login_required
@require_http_methods(["POST"])
def export_retry(request, pk):
    export = get_object_or_404(exports_services.exports_visible_to(request.user), pk=pk)
    try:
        with transaction.atomic():
            retried = exports_services.export_retry(actor=request.user, export=export)
            compliance_tasks.queue_export(retried)
    except RULE_ERRORS as exc:
        messages.error(request, getattr(exc, "message", None) or "; ".join(getattr(exc, "messages", [str(exc)])))
    else:
        messages.success(request, f"Export #{export.pk} queued again: it is built in the background.")
    return redirect("web:exports")


# --------------------------------------------------------------------------- corrections and status


def _correct(request, *, obj, form, current: dict, call, title: str, back: str, done: str, subject=None):
    """The shared shape of a correction page: only the changed fields go to the service."""
    if request.method == "POST" and _submit(
        form, lambda d: call(reason=d["reason"], **forms.changed_fields(form, current))
    ):
        messages.success(request, done)
        return redirect(back)
    return _form_page(
        request,
        "web/form.html",
        form,
        title=title,
        back=back,
        subject=subject,
        record=obj,  # its correction history, below the form
        intro="Change only what was recorded wrongly. The audit trail keeps the old and the new "
        "value of each field you change, with your reason.",
    )


def _initial(obj, names) -> dict:
    return {name: getattr(obj, name) for name in names}


@login_required
@require_http_methods(["GET", "POST"])
def subject_correct(request, pk):
    subject = _subject(request, pk)
    require_write(request.user, access.ENROL_ROLES, site=subject.site)
    current = _initial(subject, ["enrolment_date"])
    form = forms.SubjectCorrectForm(request.POST or None, initial=current)
    return _correct(
        request,
        obj=subject,
        form=form,
        current=current,
        subject=subject,
        call=lambda **kw: subjects_services.subject_correct(actor=request.user, subject=subject, **kw),
        title=f"Correct subject {subject.code}",
        back=reverse("web:subject", args=[subject.pk]),
        done=f"Subject {subject.code} corrected.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def subject_status(request, pk):
    subject = _subject(request, pk)
    require_write(request.user, access.ENROL_ROLES, site=subject.site)
    form = forms.SubjectStatusForm(request.POST or None, current=subject.status)
    if request.method == "POST" and _submit(
        form,
        lambda d: subjects_services.subject_change_status(
            actor=request.user, subject=subject, status=d["status"], reason=d["reason"], confirm=d["confirm"]
        ),
    ):
        messages.success(request, f"Subject {subject.code}: status changed.")
        return redirect("web:subject", pk=subject.pk)
    return _form_page(
        request,
        "web/form.html",
        form,
        title=f"Change the status · {subject.code}",
        subject=subject,
        back=reverse("web:subject", args=[subject.pk]),
        intro=f"Now {subject.get_status_display().lower()}. Completed and withdrawn are final.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def injection_correct(request, pk):
    injection = get_object_or_404(
        trial_selectors.injections_visible_to(request.user).select_related("subject__site", "batch"), pk=pk
    )
    subject = injection.subject
    require_write(request.user, access.INJECTION_ROLES, site=subject.site)
    names = [
        "administered_cells",
        "volume_ml",
        "route",
        "anatomical_target",
        "administered_at",
        "administered_by",
        "verified_by",
        "planned_duration_s",
    ]
    current = _initial(injection, names)
    form = forms.InjectionCorrectForm(
        request.POST or None, staff=queries.clinical_staff(subject.site), initial=current, site=subject.site
    )
    return _correct(
        request,
        obj=injection,
        form=form,
        current=current,
        subject=subject,
        call=lambda **kw: injections_services.injection_correct(
            actor=request.user,
            injection=injection,
            verifier_password=form.cleaned_data.get("verifier_password", ""),
            **kw,
        ),
        title=f"Correct injection #{injection.pk} · {subject.code}",
        back=reverse("web:subject", args=[subject.pk]),
        done=f"Injection #{injection.pk} corrected.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def consent_correct(request, pk):
    consent = get_object_or_404(trial_selectors.consents_visible_to(request.user), pk=pk)
    subject = consent.subject
    require_write(request.user, access.CONSENT_ROLES, site=subject.site)
    scopes_locked = bool(consent.withdrawn_scopes)
    current = {"signed_at": consent.signed_at, **({} if scopes_locked else {"scopes": list(consent.scopes)})}
    form = forms.ConsentCorrectForm(
        request.POST or None, scopes_locked=scopes_locked, initial=current, site=consent.subject.site
    )
    return _correct(
        request,
        obj=consent,
        form=form,
        current=current,
        subject=subject,
        call=lambda **kw: consent_services.consent_correct(actor=request.user, consent=consent, **kw),
        title=f"Correct consent #{consent.pk} · {subject.code}",
        back=reverse("web:subject", args=[subject.pk]),
        done=f"Consent #{consent.pk} corrected.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def lot_correct(request, pk):
    lot = get_object_or_404(trial_selectors.lots_visible_to(request.user), pk=pk)
    require_trial_resource_write(request.user, lot.trial)
    current = _initial(lot, list(lots_services.LOT_CORRECTABLE))
    form = forms.LotCorrectForm(request.POST or None, initial=current)
    return _correct(
        request,
        obj=lot,
        form=form,
        current=current,
        call=lambda **kw: lots_services.lot_correct(actor=request.user, lot=lot, **kw),
        title=f"Correct lot {lot.lot_number}",
        back=reverse("web:products"),
        done=f"Lot {lot.lot_number} corrected.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def batch_correct(request, pk):
    batch = _batch(request, pk)
    require_write(request.user, access.PRODUCT_ROLES, site=batch.site)
    labelling = batch.nanoparticle_lot_id is not None and batch.release_status == CellBatch.ReleaseStatus.PENDING
    names = [name for name in batches_services.BATCH_CORRECTABLE if labelling or name not in LABELLING_FIELDS]
    current = _initial(batch, names)
    lots = trial_selectors.lots_visible_to(request.user).filter(trial=batch.trial).order_by("lot_number")
    form = forms.BatchCorrectForm(
        request.POST or None, lots=lots, labelling=labelling, initial=current, site=batch.site
    )
    return _correct(
        request,
        obj=batch,
        form=form,
        current=current,
        call=lambda **kw: batches_services.batch_correct(actor=request.user, batch=batch, **kw),
        title=f"Correct batch {batch.batch_code}",
        back=reverse("web:products"),
        done=f"Batch {batch.batch_code} corrected.",
    )


# --------------------------------------------------------------------------- regions of interest


@login_required
@require_http_methods(["POST"])
def roi_define(request, pk):
    subject = _subject(request, pk)
    require_write(request.user, rois_services.ROI_ROLES, site=subject.site)
    form = _roi_form(request, subject, request.POST)
    if _submit(
        form,
        lambda d: rois_services.roi_define(
            actor=request.user,
            subject=subject,
            name=d["name"],
            kind=d["kind"],
            scan=d["scan"],
            geometry=form.geometry(),
        ),
    ):
        messages.success(request, f"Region {form.cleaned_data['name']!r} defined for {subject.code}.")
        return redirect(reverse("web:subject", args=[subject.pk]) + "#h-rois")
    return _subject_page(request, subject, forms.SignForm(), status=400, roi_form=form)


# --------------------------------------------------------------------------- operations


@login_required
@require_GET
def operations(request):
    """Queue depths, stalled work, worker heartbeats and the audit checkpoint state, for
    platform administrators (superusers, as the Django admin): 404 for everyone else."""
    if not (request.user.is_active and request.user.is_superuser):
        raise Http404
    return render(request, "web/operations.html", operations_page.overview())
