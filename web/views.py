"""Server-rendered pages. Each view: look the object up through a site-scoped selector
(404 when it is not the user's to see), translate the form, call one service, render.
Rules and audit events stay in the services."""

from __future__ import annotations

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
from compliance import services as compliance_services
from compliance import signatures
from config.errors import RuleViolation
from imaging import dicom_export
from imaging import selectors as imaging_selectors
from imaging import services as imaging_services
from imaging.models import Scan
from trials import selectors as trial_selectors
from trials import services as trial_services
from trials.models import CellBatch, LotQcStatus, Role, SubjectStatus
from trials.permissions import access
from web import forms, plots, queries, volume

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


def _form_page(request, template: str, form, **context):
    status = 400 if request.method == "POST" else 200
    return render(request, template, {"form": form, **context}, status=status)


# --------------------------------------------------------------------------- dashboard


@login_required
@require_GET
def dashboard(request):
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
    return render(request, "web/subject_list.html", {
        "page": page, "filters": q, "query": query.urlencode(), "sites": trial_selectors.visible_sites(request.user),
        "statuses": SubjectStatus.choices,
        "can_enrol": queries.sites_where(request.user, access.ENROL_ROLES).exists(),
    })


def _subject(request, pk):
    return get_object_or_404(trial_selectors.subjects_visible_to(request.user), pk=pk)


@login_required
@require_GET
def subject_detail(request, pk):
    return _subject_page(request, _subject(request, pk), forms.SignForm())


def _subject_page(request, subject, sign_form, status=200):
    timeline = queries.subject_timeline(request.user, subject)
    retention, groups = plots.plot_data(imaging_selectors.time_course(subject))
    roles = access.roles_at(request.user, subject.site)
    return render(request, "web/subject_detail.html", {
        "subject": subject, **timeline,
        "retention_svg": plots.retention_curve(retention), "retention": retention,
        "off_target_svg": plots.off_target_bars(groups, threshold_percent=float(subject.trial.off_target_alert_percent)),
        "off_target_groups": groups,
        "is_coordinator": Role.COORDINATOR in roles,
        "can_upload": bool(roles & {str(r) for r in imaging_services.UPLOAD_ROLES}),
        "is_investigator": Role.INVESTIGATOR in roles,
        "sign_form": sign_form,
    }, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def subject_enrol(request):
    sites = queries.sites_where(request.user, access.ENROL_ROLES)
    if not sites.exists():
        raise Http404
    form = forms.SubjectEnrolForm(request.POST or None, sites=sites)

    def enrol(data):
        with transaction.atomic():  # the subject and their identity, or neither
            subject = trial_services.subject_enrol(actor=request.user, site=data["site"],
                                                   enrolment_date=data["enrolment_date"], status=data["status"])
            if data.get("full_name"):
                trial_services.subject_identity_set(actor=request.user, subject=subject, full_name=data["full_name"],
                                                    date_of_birth=data["date_of_birth"],
                                                    medical_record_number=data["medical_record_number"])
        return subject

    if request.method == "POST" and (subject := _submit(form, enrol)):
        messages.success(request, f"Subject {subject.code} enrolled.")
        return redirect("web:consent-sign", pk=subject.pk)
    return _form_page(request, "web/form.html", form, title="Enrol a subject", back=reverse("web:subjects"))


@login_required
@require_http_methods(["GET", "POST"])
def consent_sign(request, pk):
    subject = _subject(request, pk)
    documents = trial_selectors.consent_documents_visible_to(request.user).filter(trial=subject.trial).order_by(
        "-effective_date")
    form = forms.ConsentSignForm(request.POST or None, documents=documents)
    if request.method == "POST" and _submit(form, lambda d: trial_services.consent_sign(
            actor=request.user, subject=subject, document=d["document"], scopes=d["scopes"], signed_at=d["signed_at"])):
        messages.success(request, f"Consent recorded for {subject.code}.")
        return redirect("web:subject", pk=subject.pk)
    return _form_page(request, "web/form.html", form, title=f"Record consent · {subject.code}", subject=subject,
                      back=reverse("web:subject", args=[subject.pk]))


@login_required
@require_http_methods(["GET", "POST"])
def consent_withdraw(request, pk):
    consent = get_object_or_404(trial_selectors.consents_visible_to(request.user), pk=pk)
    subject = consent.subject
    form = forms.ConsentWithdrawForm(request.POST or None, consent=consent)
    if request.method == "POST" and _submit(form, lambda d: trial_services.consent_withdraw(
            actor=request.user, consent=consent, scopes=d["scopes"], reason=d["reason"])):
        messages.success(request, f"Withdrawal recorded for {subject.code}.")
        return redirect("web:subject", pk=subject.pk)
    return _form_page(request, "web/form.html", form, title=f"Withdraw consent · {subject.code}", subject=subject,
                      back=reverse("web:subject", args=[subject.pk]), danger=True)


@login_required
@require_http_methods(["GET", "POST"])
def injection_record(request, pk):
    subject = _subject(request, pk)
    batches = trial_selectors.batches_visible_to(request.user).filter(
        site=subject.site, release_status=CellBatch.ReleaseStatus.RELEASED).order_by("batch_code")
    staff = queries.clinical_staff(subject.site)
    form = forms.InjectionForm(request.POST or None, batches=batches, staff=staff,
                               initial={"administered_by": request.user.pk})

    def record(d):
        return trial_services.injection_record(
            actor=request.user, subject=subject, batch=d["batch"], administered_cells=d["administered_cells"],
            volume_ml=d["volume_ml"], route=d["route"], anatomical_target=d["anatomical_target"],
            administered_at=d["administered_at"], administered_by=d["administered_by"], verified_by=d["verified_by"])

    if request.method == "POST" and _submit(form, record):
        messages.success(request, f"Injection recorded for {subject.code}.")
        return redirect("web:subject", pk=subject.pk)
    return _form_page(request, "web/form.html", form, title=f"Record an injection · {subject.code}", subject=subject,
                      back=reverse("web:subject", args=[subject.pk]))


@login_required
@require_http_methods(["POST"])
def subject_sign(request, pk):
    subject = _subject(request, pk)
    form = forms.SignForm(request.POST)
    if _submit(form, lambda d: signatures.signature_apply(signer=request.user, password=d["password"], obj=subject,
                                                          meaning=d["meaning"])):
        messages.success(request, f"Subject visit {subject.code} signed.")
        return redirect("web:subject", pk=subject.pk)
    return _subject_page(request, subject, form, status=400)


# --------------------------------------------------------------------------- lots and batches


@login_required
@require_GET
def product_list(request):
    user = request.user
    return render(request, "web/products.html", {
        "lots": trial_selectors.lots_visible_to(user).order_by("expiry_date"),
        "batches": trial_selectors.batches_visible_to(user).order_by("batch_code"),
        "can_write": queries.sites_where(user, access.PRODUCT_ROLES).exists(),
        "today": queries.timezone.localdate(),
    })


@login_required
@require_http_methods(["GET", "POST"])
def lot_register(request):
    trials = trial_selectors.visible_trials(request.user).filter(
        id__in=queries.sites_where(request.user, access.PRODUCT_ROLES).values("trial_id"))
    if not trials.exists():
        raise Http404
    form = forms.LotRegisterForm(request.POST or None, request.FILES or None, trials=trials)
    if request.method == "POST" and (lot := _submit(form, lambda d: trial_services.lot_register(actor=request.user, **d))):
        messages.success(request, f"Lot {lot.lot_number} registered (quarantined until QC release).")
        return redirect("web:products")
    return _form_page(request, "web/form.html", form, title="Register a nanoparticle lot", back=reverse("web:products"),
                      multipart=True)


@login_required
@require_http_methods(["GET", "POST"])
def lot_qc(request, pk):
    lot = get_object_or_404(trial_selectors.lots_visible_to(request.user), pk=pk)
    form = forms.LotQcForm(request.POST or None, initial={"qc_status": LotQcStatus.RELEASED})
    if request.method == "POST" and _submit(form, lambda d: trial_services.lot_set_qc_status(
            actor=request.user, lot=lot, qc_status=d["qc_status"], reason=d["reason"])):
        messages.success(request, f"Lot {lot.lot_number}: QC status changed.")
        return redirect("web:products")
    return _form_page(request, "web/form.html", form, title=f"QC status · lot {lot.lot_number}",
                      back=reverse("web:products"))


@login_required
@require_http_methods(["GET", "POST"])
def batch_register(request):
    sites = queries.sites_where(request.user, access.PRODUCT_ROLES)
    if not sites.exists():
        raise Http404
    subjects = trial_selectors.subjects_visible_to(request.user).filter(site__in=sites).order_by("code")
    form = forms.BatchRegisterForm(request.POST or None, sites=sites, subjects=subjects)
    if request.method == "POST" and (batch := _submit(form, lambda d: trial_services.batch_register(
            actor=request.user, **d))):
        messages.success(request, f"Batch {batch.batch_code} registered.")
        return redirect("web:products")
    return _form_page(request, "web/form.html", form, title="Register a cell batch", back=reverse("web:products"))


def _batch(request, pk):
    return get_object_or_404(trial_selectors.batches_visible_to(request.user), pk=pk)


@login_required
@require_http_methods(["GET", "POST"])
def batch_label(request, pk):
    batch = _batch(request, pk)
    lots = trial_selectors.lots_visible_to(request.user).filter(trial=batch.trial).order_by("lot_number")
    form = forms.BatchLabelForm(request.POST or None, lots=lots)
    if request.method == "POST" and _submit(form, lambda d: trial_services.batch_label(
            actor=request.user, batch=batch, **d)):
        messages.success(request, f"Labelling of batch {batch.batch_code} recorded.")
        return redirect("web:products")
    return _form_page(request, "web/form.html", form, title=f"Record labelling · batch {batch.batch_code}",
                      back=reverse("web:products"))


@login_required
@require_http_methods(["GET", "POST"])
def batch_release(request, pk):
    batch = _batch(request, pk)
    form = forms.BatchReleaseForm(request.POST or None, initial={"release_status": CellBatch.ReleaseStatus.RELEASED})
    if request.method == "POST" and _submit(form, lambda d: trial_services.batch_set_release_status(
            actor=request.user, batch=batch, **d)):
        messages.success(request, f"Batch {batch.batch_code}: release status changed.")
        return redirect("web:products")
    return _form_page(request, "web/form.html", form, title=f"Release · batch {batch.batch_code}",
                      back=reverse("web:products"))


# --------------------------------------------------------------------------- scans


@login_required
@require_GET
def scan_upload(request, pk):
    subject = _subject(request, pk)
    if not access.roles_at(request.user, subject.site) & {str(r) for r in imaging_services.UPLOAD_ROLES}:
        raise Http404
    injections = trial_selectors.injections_visible_to(request.user).filter(subject=subject).order_by("-administered_at")
    scanners = imaging_selectors.scanners_visible_to(request.user).filter(site=subject.site)
    form = forms.UploadForm(injections=injections, scanners=scanners)
    return render(request, "web/scan_upload.html", {"subject": subject, "form": form})


def _scan(request, pk) -> Scan:
    return get_object_or_404(imaging_selectors.scans_visible_to(request.user).select_related(
        "injection__batch", "subject__trial"), pk=pk)


@login_required
@require_GET
def scan_detail(request, pk):
    return _scan_page(request, _scan(request, pk), forms.SignForm())


def _scan_page(request, scan, sign_form, status=200):
    reconstruction = queries.reconstruction_of(scan)
    context = {"scan": scan, "reconstruction": reconstruction, "measurements": list(scan.measurements.all()),
               "final": scan.status in queries.FINAL_STATUSES,
               "is_investigator": Role.INVESTIGATOR in access.roles_at(request.user, scan.subject.site),
               "sign_form": sign_form}
    if reconstruction is not None:
        vol = volume.load(reconstruction)
        masks = volume.roi_masks(imaging_services.rois_for(scan), vol.grid)
        nz, ny, nx = vol.shape
        context.update({
            "planes": [{"name": name, "label": label, "count": vol.shape[axis], "middle": vol.shape[axis] // 2}
                       for name, (axis, label, _, _) in volume.PLANES.items()],
            "colour_bar": volume.colour_bar(vol.vmax), "legend": volume.roi_legend(masks),
            "grid": {"nx": nx, "ny": ny, "nz": nz},
            "signatures": signatures.signatures_verify(reconstruction, actor=request.user),
        })
    return render(request, "web/scan_detail.html", context, status=status)


@login_required
@require_GET
def scan_image(request, pk, plane, index=None):
    scan = _scan(request, pk)
    reconstruction = queries.reconstruction_of(scan)
    if reconstruction is None or (plane != "mip" and plane not in volume.PLANES):
        raise Http404
    vol = volume.load(reconstruction)
    masks = volume.roi_masks(imaging_services.rois_for(scan), vol.grid)
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
        imaging_services.file_download_record(actor=request.user, scan=scan, which="dicom_study",
                                              path=f"built from {reconstruction.file}")
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
    if _submit(form, lambda d: signatures.signature_apply(signer=request.user, password=d["password"],
                                                          obj=reconstruction, meaning=d["meaning"])):
        messages.success(request, f"Results of scan #{scan.pk} signed.")
        return redirect("web:scan", pk=scan.pk)
    return _scan_page(request, scan, form, status=400)


# --------------------------------------------------------------------------- auditors


@login_required
@require_http_methods(["GET", "POST"])
def exports(request):
    user = request.user
    trials = trial_selectors.visible_trials(user)
    if not trials.exists():
        raise Http404
    form = forms.ExportRequestForm(request.POST or None, trials=trials, sites=trial_selectors.visible_sites(user))
    if request.method == "POST" and (export := _submit(form, lambda d: compliance_services.export_request(
            actor=user, kind=d["kind"], trial=d["trial"], site=d["site"]))):
        messages.success(request, f"Export #{export.pk} requested: it is built in the background.")
        return redirect("web:exports")
    items = list(compliance_services.exports_visible_to(user).order_by("-created_at", "-id")[:50])
    pending = any(e.status in ("queued", "running") for e in items)
    return render(request, "web/exports.html", {
        "form": form, "exports": items, "pending": pending,
        "audit_trials": compliance_selectors.audit_trial_ids(user),
    }, status=400 if request.method == "POST" else 200)
