"""The live injection pages (issue #16): start a session from an injection, watch it
(/live/<id>/: image, curves, stream health, alerts), and, once it has ended, read it as
its record (curves from the stored metrics, alerts and who acknowledged them, live next to
offline numbers) and replay it.

The page draws what the event stream (GET /api/v1/live-sessions/{id}/events/) sends and
acknowledges alerts through the API (POST /api/v1/live-alerts/{id}/acknowledge/); its
script is web/static/web/live.js, its data a JSON script element (not executed: the CSP
holds). Everything live is labelled provisional.
"""

from __future__ import annotations

import shlex

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from compliance import tokens
from config.errors import RuleViolation
from config.token_scopes import TokenScope
from imaging import selectors as imaging_selectors
from live import feed
from live.dose import MIN_FRACTION as DOSE_MIN_FRACTION
from live.dose import planned_duration
from live.models import LiveAlert, LiveMark, LiveSession
from live.selectors import session_marks
from live.services.marks import MARKABLE_STATUSES, allowed_kinds, injection_state
from live.services.sessions import session_create
from trials import selectors as trial_selectors
from trials import site_time
from web import demo_stream, live_data, queries, volume
from web.live_forms import LiveStartForm
from web.permissions import may_write, require_write

STREAM_ROLES = live_data.STREAM_ROLES
ACKNOWLEDGE_ROLES = live_data.ACKNOWLEDGE_ROLES
MARK_ROLES = live_data.MARK_ROLES
#: The mark buttons, in the order shown: (kind, the button's words).
MARK_BUTTONS = [
    (LiveMark.Kind.INJECTION_START.value, "▶ Start injection"),
    (LiveMark.Kind.INJECTION_PAUSE.value, "❚❚ Pause injection"),
    (LiveMark.Kind.INJECTION_RESUME.value, "▶ Resume injection"),
    (LiveMark.Kind.INJECTION_STOP.value, "■ Stop injection"),
]
BRIDGE_TOKEN_DAYS = 1
LIST_ROWS = 50
# Scoped API tokens (compliance.api.ApiTokenViewSet): POST {"name", "scope": "scanner", "expires_in_days"}.
TOKEN_API = "/api/v1/auth/tokens/"  # noqa: S105 - a URL path, not a secret


def demo_available() -> bool:
    return not settings.PRODUCTION and demo_stream.demo_stream_ready()


def base_url(request) -> str:
    return request.build_absolute_uri("/").rstrip("/")


#: What stands in the shown command for the key until one is issued on the page.
TOKEN_PLACEHOLDER = "TOKEN"  # noqa: S105 - a placeholder word, not a secret


def bridge_command(request, session: LiveSession, token: str = TOKEN_PLACEHOLDER) -> str:
    return shlex.join(
        ["python", "-m", "bridge", "replay", "MEASUREMENT.mdf", "--url", base_url(request), "--token", token]
        + ["--session", str(session.pk)]
    )


# --------------------------------------------------------------------------- list


@login_required
@require_GET
def live_index(request):
    sessions = list(live_data.live_sessions_visible_to(request.user).order_by("-created_at", "-id")[:LIST_ROWS])
    roles = queries.roles_of(request.user)
    return render(
        request,
        "web/live_list.html",
        {"sessions": sessions, "demo": demo_available() and roles["site_member"]},
    )


@login_required
@require_POST
def live_demo_start(request):
    if not demo_available() or not queries.roles_of(request.user)["site_member"]:
        raise Http404
    try:
        demo = demo_stream.start_demo_stream(base_url=base_url(request), speed=1.0)
    except RuleViolation as exc:
        messages.error(request, exc.message)
        return redirect("web:live-list")
    messages.success(request, f"Demo stream started into live session #{demo.session.pk}.")
    return redirect("web:live", pk=demo.session.pk)


# --------------------------------------------------------------------------- start


@login_required
@require_http_methods(["GET", "POST"])
def live_start(request, pk):
    injection = get_object_or_404(
        trial_selectors.injections_visible_to(request.user).select_related("batch__nanoparticle_lot", "subject__trial"),
        pk=pk,
    )
    subject = injection.subject
    require_write(request.user, STREAM_ROLES, site=subject.site)
    context = live_data.start_context(request.user, injection)
    scanners = imaging_selectors.scanners_visible_to(request.user).filter(site=subject.site).order_by("name")
    form = LiveStartForm(request.POST or None, calibrations=context.calibrations, scanners=scanners)
    if request.method == "POST" and form.is_valid():
        try:
            session = session_create(
                actor=request.user,
                injection=injection,
                system_matrix=form.cleaned_data["system_matrix"],
                scanner=form.cleaned_data["scanner"],
            )
        except RuleViolation as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            feed.session_created(session.pk)  # its live engine is prepared while the scanner is set up
            messages.success(request, f"Live session #{session.pk} opened: start the scanner bridge.")
            return redirect("web:live", pk=session.pk)
    return render(
        request,
        "web/live_start.html",
        {"injection": injection, "subject": subject, "form": form, "start": context},
        status=400 if request.method == "POST" else 200,
    )


# --------------------------------------------------------------------------- the page


def _session(request, pk) -> LiveSession:
    return get_object_or_404(live_data.live_sessions_visible_to(request.user), pk=pk)


@login_required
@require_GET
def live_page(request, pk):
    return _live_page(request, _session(request, pk))


@login_required
@require_POST
def live_token(request, pk):
    """Issue the bridge a scanner token (shown once, on this answer only)."""
    session = _session(request, pk)
    require_write(request.user, STREAM_ROLES, site=session.subject.site)
    if session.is_final:
        raise Http404
    try:
        issued = tokens.scoped_token_issue(
            actor=request.user,
            user=request.user,
            name=f"bridge, live session {session.pk}",
            scope=TokenScope.SCANNER,
            expires_in_days=BRIDGE_TOKEN_DAYS,
        )
    except RuleViolation as exc:
        messages.error(request, exc.message)
        return redirect("web:live", pk=session.pk)
    return _live_page(request, session, token=issued.key)


def _live_page(request, session: LiveSession, token: str | None = None):
    user = request.user
    site = session.subject.site
    rois = live_data.regions_of(session)
    styles = live_data.region_styles(rois)
    alerts = live_data.alert_rows(session)
    can_stream = may_write(user, STREAM_ROLES, site=site)
    can_acknowledge = may_write(user, ACKNOWLEDGE_ROLES, site=site)
    marks = session_marks(session)
    state = injection_state(m.kind for m in marks)
    allowed = allowed_kinds(state)
    can_mark = session.status in MARKABLE_STATUSES and may_write(user, MARK_ROLES, site=site)
    try:
        injected_ng = imaging_selectors.injected_iron_ng(session.injection)
    except RuleViolation:
        injected_ng = None
    started_at = (session.header or {}).get("started_at") if isinstance(session.header, dict) else None
    planned = planned_duration(session.injection)
    config = {
        "session": session.pk,
        "status": session.status,
        "final": session.is_final,
        "page_url": reverse("web:live", args=[session.pk]),
        "events_url": f"/api/v1/live-sessions/{session.pk}/events/",
        "slice_url": f"/api/v1/live-sessions/{session.pk}/slice/",
        "session_url": f"/api/v1/live-sessions/{session.pk}/",
        "acknowledge_url": "/api/v1/live-alerts/{id}/acknowledge/",
        "can_acknowledge": can_acknowledge,
        "threshold_percent": float(session.subject.trial.off_target_alert_percent),
        "lag_budget_ms": live_data.lag_budget_ms(),
        "stall_after_s": 3.0,
        "injected_ng": injected_ng,
        "injection_expected_s": planned.seconds,
        "injection_expected_source": planned.source,
        "dose_min_fraction": DOSE_MIN_FRACTION,
        "started_at": started_at,
        "time_zone": session.subject.site.time_zone,
        "zone_names": site_time.zone_names(session.subject.site.time_zone),
        "frame_duration_s": session.frame_duration_s,
        "regions": styles,
        "outlines": live_data.outlines(session.system_matrix, rois),
        "lut": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in volume._lut().tolist()],
        "alerts": [live_data.alert_data(a) for a in alerts],
        "alert_kinds": dict(LiveAlert.Kind.choices),
        "marks": [live_data.mark_data(m) for m in marks],
        "marks_url": f"/api/v1/live-sessions/{session.pk}/marks/",
        "can_mark": can_mark,
        "mark_kinds": dict(LiveMark.Kind.choices),
        "injection_state": state,
        "health": {
            "frames_received": session.frames_received,
            "frames_recorded": session.frames_recorded,
            "frames_dropped": session.frames_dropped,
            "lag_ms": session.lag_ms,
        },
        "record": live_data.metric_series(session) if session.is_final else None,
    }
    context = {
        "session": session,
        "subject": session.subject,
        "injection": session.injection,
        "regions": styles,
        "alerts": alerts,
        "config": config,
        "can_stream": can_stream,
        "can_acknowledge": can_acknowledge,
        "marks": marks,
        "can_mark": can_mark,
        "mark_buttons": [(kind, words, kind in allowed) for kind, words in MARK_BUTTONS],
        "injection_state": state,
        "threshold_percent": config["threshold_percent"],
        "injected_ng": injected_ng,
        "injection_expected_s": config["injection_expected_s"],
        "planned": planned,
        "lag_budget_ms": config["lag_budget_ms"],
        "token": token,
        "bridge_command": bridge_command(request, session, token or TOKEN_PLACEHOLDER) if can_stream else None,
        "token_api": TOKEN_API,
        "comparison": live_data.live_vs_offline(session) if session.is_final else None,
        "record": config["record"],
    }
    return render(request, "web/live_session.html", context)
