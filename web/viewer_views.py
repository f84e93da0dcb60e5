"""The scan viewer's tools (window / level, zoom and pan, iron under the cursor, another
time point beside this one, a region drawn on the image): the slice as numbers, a drawn
region's iron computed here from the stored reconstruction, and its saving as a region of
interest through ``imaging.services.rois`` (audited there).

Every endpoint finds the scan among the user's sites (another site's scan: 404); a sponsor
gets 404 from ``web.urls`` (not a sponsor page). Nothing is written on a GET.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from config.api_errors import error_body, status_for
from config.errors import RuleViolation
from imaging import selectors as imaging_selectors
from imaging.models import RoiKind, Scan
from imaging.services import rois as rois_services
from web import queries, volume
from web.permissions import may_write


def _scan(user, pk) -> Scan:
    return get_object_or_404(imaging_selectors.scans_visible_to(user).select_related("subject__site"), pk=pk)


def _volume(scan: Scan) -> volume.Volume:
    reconstruction = queries.reconstruction_of(scan)
    if reconstruction is None:
        raise Http404
    return volume.load(reconstruction)


def _refused(exc: RuleViolation) -> JsonResponse:
    fields = {exc.field: [exc.message]} if exc.field else None
    return JsonResponse(error_body(exc.code, exc.message, fields), status=status_for(exc.code))


def tools_context(user, scan: Scan) -> dict:
    """What the scan page's viewer tools need: the subject's other reconstructed scans
    (time points to show beside this one) and whether the user may save a drawn region."""
    others = [
        {"pk": other.pk, "hours": other.hours_after_injection}
        for other in imaging_selectors.scans_visible_to(user)
        .filter(subject_id=scan.subject_id, reconstructions__isnull=False)
        .exclude(pk=scan.pk)
        .distinct()
        .order_by("hours_after_injection", "pk")
    ]
    return {
        "compare_scans": others,
        "may_save_region": may_write(user, rois_services.ROI_ROLES, site=scan.subject.site),
        "roi_kinds": RoiKind.choices,
    }


@login_required
@require_GET
def scan_slice_values(request, pk, plane, index):
    """One slice as iron per voxel (ng Fe) in JSON, with the colour map of the PNGs."""
    scan = _scan(request.user, pk)
    if plane not in volume.PLANES:
        raise Http404
    vol = _volume(scan)
    if not 0 <= index < vol.shape[volume.PLANES[plane][0]]:
        raise Http404
    payload = volume.slice_payload(vol, plane, index)
    payload.update({"scan": scan.pk, "hours": scan.hours_after_injection, "lut": volume.lut_hex()})
    response = JsonResponse(payload)
    response["Cache-Control"] = "private, max-age=300"
    return response


def _region_input(data, vol: volume.Volume) -> tuple[str, int, tuple[int, int], tuple[int, int]]:
    plane = data.get("plane", "")
    if plane not in volume.PLANES:
        raise RuleViolation("invalid_region", "plane must be axial, coronal or sagittal.", field="plane")
    try:
        index, h0, h1, v0, v1 = (int(data.get(key, "")) for key in ("index", "h0", "h1", "v0", "v1"))
    except ValueError:
        raise RuleViolation(
            "invalid_region", "index, h0, h1, v0 and v1 must be whole voxel numbers.", field="region"
        ) from None
    image, _ = volume.plane_image(vol, plane, 0)
    rows, cols = image.shape
    limits = (
        (index, vol.shape[volume.PLANES[plane][0]]),
        (h0, cols),
        (h1, cols),
        (v0, rows),
        (v1, rows),
    )
    if any(not 0 <= value < count for value, count in limits):
        raise RuleViolation("invalid_region", "The region lies outside the image.", field="region")
    return plane, index, (h0, h1), (v0, v1)


@login_required
@require_http_methods(["GET", "POST"])
def scan_region(request, pk):
    """GET: the iron inside a rectangle drawn on a slice (voxel numbers of the plane's
    horizontal and vertical axes, inclusive; ``v`` counts up from the lowest coordinate),
    computed from the stored values. POST: the same, saved as a region of interest of this
    scan or of the subject (``scope``), through the ROI service (its roles, its audit event)."""
    scan = _scan(request.user, pk)
    vol = _volume(scan)
    data = request.GET if request.method == "GET" else request.POST
    try:
        plane, index, h, v = _region_input(data, vol)
        geometry = volume.region_geometry(vol, plane, index, h, v)
        result = volume.region_iron(vol, geometry)
        if request.method == "POST":
            roi = rois_services.roi_define(
                actor=request.user,
                subject=scan.subject,
                name=data.get("name", "").strip(),
                kind=data.get("kind", ""),
                geometry=geometry,
                scan=scan if data.get("scope", "scan") == "scan" else None,
            )
            result["roi"] = {"pk": roi.pk, "name": roi.name, "kind": roi.kind, "scan": roi.scan_id}
            result["scan_url"] = reverse("web:scan", args=[scan.pk])
    except RuleViolation as exc:
        return _refused(exc)
    except ValidationError as exc:  # the model's own checks (a name is required, its length)
        fields = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return JsonResponse(error_body("invalid", " ".join(exc.messages), fields), status=400)
    result["geometry"] = geometry
    return JsonResponse(result, status=201 if request.method == "POST" else 200)
