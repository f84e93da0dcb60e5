"""What the live injection pages read and draw: the sessions a user may watch, the start
form's choices, the region outlines on the live image, and a finished session's record
(curves from the stored ``LiveMetric`` rows, alerts, live numbers next to the offline
ones of the recorded scan).

Every read starts from a site-scoped selector; numbers come from stored rows. Everything
live is provisional: the recorded scan's offline quantification is the authoritative one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db.models import QuerySet

from config.errors import RuleViolation
from imaging import selectors as imaging_selectors
from imaging.models import OFF_TARGET_KINDS, RegionOfInterest, RoiKind, Scan, SystemMatrix
from imaging.services import scan_uploads
from live.dose import MIN_FRACTION as DOSE_MIN_FRACTION
from live.dose import PlannedDuration, dose_so_far, planned_duration, planned_duration_s
from live.models import LiveAlert, LiveMark, LiveMetric, LiveSession
from live.services import alerts, marks
from recon.quantify import Grid, mask_from_record
from trials.models import Injection, Role
from trials.permissions.access import sponsor_trial_ids, visible_site_ids
from web import queries
from web.volume import ROI_COLOURS

#: Who opens a live session and streams (``live.services.sessions``' rule, shown as links).
STREAM_ROLES = frozenset({Role.IMAGING_STAFF})
#: Who acknowledges a live alert (``live.services.alerts``' rule, its one home).
ACKNOWLEDGE_ROLES = alerts.ACKNOWLEDGE_ROLES
#: Who enters injection marks (``live.services.marks``' rule: the same clinicians).
MARK_ROLES = marks.MARK_ROLES
#: The record's "end of session" live numbers: the mean of the last this many foreground frames.
RECORD_TAIL_FRAMES = 50
#: At most this many points per curve in the record (every k-th stored metric beyond).
RECORD_MAX_POINTS = 4000
#: Marker shapes of the regions (colour plus shape, never colour alone), in order.
SHAPES = ["circle", "square", "triangle", "diamond", "cross", "star"]
#: A region kind's fixed colour and shape where there is one: target green circle, lungs
#: red triangle, liver amber square, spleen violet diamond; "other" kinds cycle the rest.
KIND_STYLE = {
    RoiKind.TARGET: ("#15803d", "circle"),
    RoiKind.LUNGS: ("#dc2626", "triangle"),
    RoiKind.LIVER: ("#b45309", "square"),
    RoiKind.SPLEEN: ("#7c3aed", "diamond"),
}


def live_sessions_visible_to(user) -> QuerySet[LiveSession]:
    """The sessions ``user`` may watch: their sites' (members, and trial-wide monitors and
    auditors); a sponsor none. The same rule as ``live.selectors.live_sessions_visible_to``,
    on the same access primitives."""
    return (
        LiveSession.objects.filter(subject__site_id__in=visible_site_ids(user))
        .exclude(subject__trial_id__in=sponsor_trial_ids(user))
        .select_related("subject__site", "subject__trial", "injection__batch", "scanner", "system_matrix", "scan")
    )


def lag_budget_ms() -> float:
    return float(getattr(settings, "LIVE_LAG_BUDGET_MS", 1000))


# --------------------------------------------------------------------------- start


@dataclass(frozen=True)
class StartContext:
    calibrations: list[SystemMatrix]
    consent_problem: str | None  # None: imaging consent in force now
    consents: list
    threshold_percent: float
    injected_ng: float | None
    planned: PlannedDuration


def calibrations_for(user, injection: Injection) -> list[SystemMatrix]:
    """The active system matrices of the injection's site's scanners that fit its tracer
    (the product of the batch's nanoparticle lot, and the lot itself where the calibration
    names one: the rule of ``imaging.services.scanners``)."""
    lot = injection.batch.nanoparticle_lot
    product = (lot.product if lot is not None else "").strip().lower()
    matrices = (
        imaging_selectors.system_matrices_visible_to(user)
        .filter(scanner__site_id=injection.subject.site_id, active=True)
        .order_by("scanner__name", "-created_at")
    )
    return [
        sm
        for sm in matrices
        if sm.tracer_product.strip().lower() == product
        and (sm.nanoparticle_lot_id is None or (lot is not None and sm.nanoparticle_lot_id == lot.pk))
    ]


def start_context(user, injection: Injection) -> StartContext:
    subject = injection.subject
    try:
        scan_uploads.assert_imaging_consent(subject, injection=injection, hours_after_injection=0.0)
        problem = None
    except RuleViolation as exc:
        problem = exc.message
    from trials.selectors import consents_visible_to

    try:
        injected = imaging_selectors.injected_iron_ng(injection)
    except RuleViolation:
        injected = None
    return StartContext(
        calibrations=calibrations_for(user, injection),
        consent_problem=problem,
        consents=list(consents_visible_to(user).filter(subject=subject).order_by("-signed_at")),
        threshold_percent=float(subject.trial.off_target_alert_percent),
        injected_ng=injected,
        planned=planned_duration(injection),
    )


# --------------------------------------------------------------------------- regions


def regions_of(session: LiveSession) -> list[RegionOfInterest]:
    """The subject's regions the live worker uses: the subject-level ones (no scan)."""
    return list(
        RegionOfInterest.objects.filter(subject_id=session.subject_id, scan__isnull=True).order_by("kind", "name")
    )


def region_styles(rois) -> list[dict]:
    """[{name, kind, kind_label, colour, shape, off_target}] in a stable order (target first)."""
    order = {RoiKind.TARGET: 0, RoiKind.LUNGS: 1, RoiKind.LIVER: 2, RoiKind.SPLEEN: 3, RoiKind.OTHER: 4}
    styles = []
    spare = 0
    for roi in sorted(rois, key=lambda r: (order.get(r.kind, 9), r.name)):
        if roi.kind in KIND_STYLE:
            colour, shape = KIND_STYLE[RoiKind(roi.kind)]
        else:
            colour, shape = ROI_COLOURS[spare % len(ROI_COLOURS)], SHAPES[(spare + 4) % len(SHAPES)]
            spare += 1
        styles.append(
            {
                "name": roi.name,
                "kind": roi.kind,
                "kind_label": roi.get_kind_display(),
                "colour": colour,
                "shape": shape,
                "off_target": roi.kind in OFF_TARGET_KINDS,
            }
        )
    return styles


def outlines(system_matrix: SystemMatrix | None, rois) -> dict | None:
    """The regions projected along z onto the calibration's grid, as the edges of their
    voxels in grid units: {"grid": [nx, ny], "regions": {name: [[x0, y0, x1, y1], ...]}}.
    The live image is the maximum-intensity projection along z of the same grid."""
    if system_matrix is None:
        return None
    try:
        grid = Grid(
            tuple(system_matrix.grid_size),
            tuple(system_matrix.field_of_view_m),
            tuple(system_matrix.field_of_view_center_m),
        )
    except (TypeError, ValueError):
        return None
    nx, ny, nz = grid.size
    regions: dict[str, list[list[int]]] = {}
    for roi in rois:
        if not roi.geometry:
            continue
        try:
            mask = np.asarray(
                np.asarray(mask_from_record(grid, roi.geometry), dtype=bool).reshape(nz, ny, nx).any(axis=0)
            )
        except (KeyError, TypeError, ValueError):
            continue
        regions[roi.name] = _edges(mask)
    return {"grid": [nx, ny], "regions": regions}


def _edges(mask: np.ndarray) -> list[list[int]]:
    """The outline of a (ny, nx) mask: unit segments between a voxel in and one out."""
    padded = np.pad(mask, 1)
    segments = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        py, px = y + 1, x + 1
        if not padded[py - 1, px]:
            segments.append([int(x), int(y), int(x) + 1, int(y)])
        if not padded[py + 1, px]:
            segments.append([int(x), int(y) + 1, int(x) + 1, int(y) + 1])
        if not padded[py, px - 1]:
            segments.append([int(x), int(y), int(x), int(y) + 1])
        if not padded[py, px + 1]:
            segments.append([int(x) + 1, int(y), int(x) + 1, int(y) + 1])
    return segments


# --------------------------------------------------------------------------- record


def _finite(value) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def metric_series(session: LiveSession, *, max_points: int = RECORD_MAX_POINTS) -> dict:
    """The session's stored live metrics as curves: {"frame": [...], "t": [s from the first
    metric], "acquired_at": [...], "rois": {name: {"kind", "iron_ng": [...]}}, "target_percent",
    "off_target_percent", "dose_so_far_ng" (``live.dose``: the dose injected so far at each
    drawn frame, from the session's marks and the injection's planned duration; None where
    not known), "count" (stored rows),
    "step" (every step-th row drawn)}."""
    rows = list(
        LiveMetric.objects.filter(session=session)
        .order_by("frame")
        .values_list("frame", "acquired_at", "rois", "target_percent_of_injected", "off_target_percent")
    )
    count = len(rows)
    step = max(1, math.ceil(count / max_points)) if count else 1
    drawn = rows[::step]
    if drawn and drawn[-1] is not rows[-1]:
        drawn.append(rows[-1])  # the last number always shows
    t0 = drawn[0][1] if drawn else None
    rois: dict[str, dict] = {}
    for index, (_frame, _at, values, _target, _off) in enumerate(drawn):
        for name, value in (values or {}).items():
            series = rois.setdefault(
                name,
                {"kind": value.get("kind"), "iron_ng": [None] * len(drawn), "detection_limit_ng": [None] * len(drawn)},
            )
            series["iron_ng"][index] = _finite(value.get("iron_ng"))
            series["detection_limit_ng"][index] = _finite(value.get("detection_limit_ng"))
    try:
        whole = imaging_selectors.injected_iron_ng(session.injection)
    except RuleViolation:
        whole = None
    mark_rows = list(LiveMark.objects.filter(session=session).order_by("at", "id").values_list("kind", "frame"))
    expected_s = planned_duration_s(session.injection)
    so_far = [
        dose_so_far(mark_rows, r[0], whole_ng=whole, frame_duration_s=session.frame_duration_s, expected_s=expected_s)
        for r in drawn
    ]
    return {
        "frame": [r[0] for r in drawn],
        "acquired_at": [r[1] for r in drawn],
        "dose_so_far_ng": [
            d.ng if d.fraction is not None and d.fraction >= DOSE_MIN_FRACTION else None for d in so_far
        ],
        "injection_state": [d.state for d in so_far],
        "t": [round(r[1] - t0, 4) for r in drawn] if t0 is not None else [],
        "rois": rois,
        "target_percent": [_finite(r[3]) for r in drawn],
        "off_target_percent": [_finite(r[4]) for r in drawn],
        "count": count,
        "step": step,
    }


def alert_rows(session: LiveSession) -> list[LiveAlert]:
    return list(
        LiveAlert.objects.filter(session=session).select_related("acknowledged_by").order_by("created_at", "id")
    )


def mark_data(mark: LiveMark) -> dict:
    """A mark as the page draws it: the same fields as the event stream's ``mark`` event."""
    return {
        "id": mark.pk,
        "kind": mark.kind,
        "label": mark.get_kind_display(),
        "frame": mark.frame,
        "at": mark.at.timestamp(),
        "by": mark.created_by.get_username(),
        "note": mark.note,
    }


def alert_data(alert: LiveAlert) -> dict:
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "kind_label": alert.get_kind_display(),
        "frame": alert.frame,
        "acquired_at": alert.acquired_at,
        "created_at": alert.created_at.timestamp(),
        "value_percent": alert.value_percent,
        "threshold_percent": alert.threshold_percent,
        "message": alert.message,
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by else None,
        "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
        "reason": alert.acknowledgement_reason,
    }


def _mean(values) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def live_numbers(session: LiveSession, *, tail_frames: int = RECORD_TAIL_FRAMES) -> dict:
    """The session's live numbers, two ways: ``mean``, over every stored frame (what the
    offline pipeline does with the recording: it averages its frames) and ``tail``, over
    the last ``tail_frames`` (where the injection ended). Per region the mean iron, the
    mean target % of injected, and the off-target share of those mean region irons."""
    rows = list(
        LiveMetric.objects.filter(session=session)
        .order_by("frame")
        .values_list("rois", "target_percent_of_injected", "off_target_percent")
    )
    names: dict[str, str] = {}
    for values, _target, _off in rows:
        for name, value in (values or {}).items():
            names.setdefault(name, value.get("kind"))

    def summary(part: list) -> dict:
        rois = {
            name: _mean([_finite((values or {}).get(name, {}).get("iron_ng")) for values, _t, _o in part])
            for name in names
        }
        return {
            "frames": len(part),
            "rois": rois,
            "target_percent": _mean([_finite(t) for _v, t, _o in part]),
            "off_target_percent": off_target_share(rois, names),
        }

    return {"kinds": names, "mean": summary(rows), "tail": summary(rows[-tail_frames:] if tail_frames else [])}


def off_target_share(iron: dict[str, float | None], kinds: dict[str, str]) -> float | None:
    """The off-target share of averaged region iron, as the offline pipeline takes it from
    the averaged frames: off-target regions' iron over all regions' iron, of the regions
    with iron above zero (the live rows keep no detection limit). None when none has any."""
    positive = {name: value for name, value in iron.items() if value is not None and value > 0}
    total = sum(positive.values())
    if not total:
        return None
    off = sum(value for name, value in positive.items() if kinds.get(name) in OFF_TARGET_KINDS)
    return 100.0 * off / total


def _difference(live: float | None, offline: float | None) -> dict:
    if live is None or offline is None:
        return {"absolute": None, "relative_percent": None}
    return {
        "absolute": live - offline,
        "relative_percent": (live - offline) / abs(offline) * 100.0 if offline else None,
    }


def live_vs_offline(session: LiveSession) -> dict:
    """Per region: the live numbers (``live_numbers``: session mean and end of session),
    the offline one of the recorded scan (its newest reconstruction's Measurement, once
    quantified) and the difference of like with like (the session mean: the offline
    pipeline averages the recording's frames); and the same for the target % of injected
    and the off-target share of detected iron."""
    live = live_numbers(session)
    mean, tail = live["mean"], live["tail"]
    scan = session.scan
    quantified = scan is not None and scan.status == Scan.Status.QUANTIFIED
    measurements = {}
    summary: dict = {}
    if quantified and scan is not None:
        reconstruction = queries.reconstruction_of(scan)
        if reconstruction is not None:
            measurements = {m.roi_name: m for m in reconstruction.measurements.all()}
        summary = scan.metrics_summary or {}
    rows = []
    for name in sorted(set(live["kinds"]) | set(measurements)):
        m = measurements.get(name)
        offline = m.iron_ng if m is not None else None
        rows.append(
            {
                "name": name,
                "kind": live["kinds"].get(name) or (m.roi_kind if m else ""),
                "live_ng": mean["rois"].get(name),
                "end_ng": tail["rois"].get(name),
                "offline_ng": offline,
                "offline_uncertainty_ng": m.uncertainty_ng if m is not None else None,
                **{f"difference_{k}": v for k, v in _difference(mean["rois"].get(name), offline).items()},
            }
        )
    targets = [m.retention_percent for m in measurements.values() if m.roi_kind == RoiKind.TARGET]
    target_offline = sum(targets) if targets else None  # live: the target regions' iron together
    off_offline = summary.get("off_target_percent") if quantified else None
    return {
        "scan": scan,
        "quantified": quantified,
        "frames": mean["frames"],
        "tail_frames": tail["frames"],
        "rows": rows,
        "target": {
            "live": mean["target_percent"],
            "end": tail["target_percent"],
            "offline": target_offline,
            **_difference(mean["target_percent"], target_offline),
        },
        "off_target": {
            "live": mean["off_target_percent"],
            "end": tail["off_target_percent"],
            "offline": off_offline,
            **_difference(mean["off_target_percent"], off_offline),
        },
    }
