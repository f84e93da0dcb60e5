"""What the record pages show: the subject-by-time-point status grid, a record's correction
history, the upload history. Every read goes through the site-scoped selectors; a few
queries per page, whatever the number of rows."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import QuerySet
from django.utils import timezone

from audit.actions import AuditAction
from audit.selectors import correction_history
from imaging import selectors as imaging_selectors
from imaging.models import Scan, ScanStatus, Upload
from trials import selectors as trial_selectors
from trials import site_time
from trials.models import Consent, Injection, Site, Subject, SubjectStatus
from trials.permissions import access
from trials.schedule import IMAGING_SCHEDULE_HOURS, TIME_POINT_WINDOW_HOURS, consent_scopes_for_scan, time_point_of

# --------------------------------------------------------------------------- status grid

DONE, EXPECTED, OVERDUE = "done", "expected", "overdue"
WITHDRAWN, NOT_CONSENTED, NO_CONSENT = "withdrawn", "not-consented", "no-consent"
NOT_APPLICABLE = "not-applicable"
STATES = {
    DONE: ("✓", "done"),
    EXPECTED: ("", "expected"),  # the mark is an open circle (records.css)
    OVERDUE: ("!", "overdue"),
    WITHDRAWN: ("×", "not expected: consent withdrawn"),
    NOT_CONSENTED: ("×", "not expected: not consented"),
    NO_CONSENT: ("?", "no consent on file"),
    NOT_APPLICABLE: ("–", "not applicable"),
}

_SCOPE_WORDS = {"imaging": "imaging", "longitudinal_imaging": "follow-up imaging"}


@dataclass
class Cell:
    state: str
    detail: str = ""
    link: str = ""

    @property
    def symbol(self) -> str:
        return STATES[self.state][0]

    @property
    def word(self) -> str:
        return STATES[self.state][1]


@dataclass
class GridRow:
    subject: Subject
    cells: list[Cell] = field(default_factory=list)


def _closed(subject: Subject) -> bool:
    return subject.status in (SubjectStatus.WITHDRAWN, SubjectStatus.COMPLETED)


def _not_covered(
    subject: Subject, consent: Consent | None, hours: float, on_file: list[float], now: dt.datetime
) -> Cell | None:
    """The cell of a time point a scan could not be uploaded for now, for want of consent:
    none on file, a scope it needs withdrawn (with the date) or never granted. The scopes
    are the upload's own rule (``trials.schedule.consent_scopes_for_scan``, given the scans
    ``on_file``) and each is read as the upload reads it (``trials.selectors.scope_standing``).
    None when every scope is in force."""
    if consent is None:
        # A subject who withdrew or completed is expecting no scan anyway: not applicable.
        return None if _closed(subject) else Cell(NO_CONSENT, "a scan cannot be uploaded until a consent is recorded")
    for scope in consent_scopes_for_scan(hours, hours_on_file=on_file):
        standing = trial_selectors.scope_standing(consent, scope, now)
        if standing.withdrawn_at is not None:
            when = site_time.stamp(standing.withdrawn_at, subject.site.time_zone)
            return Cell(WITHDRAWN, f"{_SCOPE_WORDS[scope]} consent withdrawn {when}")
        if not standing.in_force:
            return Cell(NOT_CONSENTED, f"no {_SCOPE_WORDS[scope]} consent")
    return None


def status_grid(user, *, site: str = "", now: dt.datetime | None = None) -> dict:
    """Rows: the subjects the user may see; columns: the injection, then each scheduled
    time point (``trials.schedule``). A time point is done when a scan (not rejected) of
    the subject's first injection falls in its window, overdue when the window has closed
    without one, expected before that, and not applicable for a subject who withdrew or
    completed without it. A time point a scan could not be uploaded for now, for want of
    consent, is never overdue: "withdrawn", with the date, "not consented", or "no consent
    on file". The scopes it needs are the upload's rule (``consent_scopes_for_scan``):
    imaging, and longitudinal imaging as well once an earlier scan of the injection is on
    file. Times on each subject's site's clock."""
    now = now or timezone.now()
    subjects = trial_selectors.subjects_visible_to(user).select_related("site").order_by("site__code", "code")
    if site.isdigit():
        subjects = subjects.filter(site_id=int(site))
    subject_list = list(subjects)
    ids = [s.pk for s in subject_list]
    first_injection: dict[int, Injection] = {}
    for given in (
        trial_selectors.injections_visible_to(user).filter(subject_id__in=ids).order_by("administered_at", "id")
    ):
        first_injection.setdefault(given.subject_id, given)
    consents = trial_selectors.governing_consents(ids, at=now)
    scans: dict[tuple[int, float], Scan] = {}
    on_file: dict[int, list[float]] = defaultdict(list)  # subject -> hours of its first injection's scans
    for scan in (
        imaging_selectors.scans_visible_to(user)
        .filter(subject_id__in=ids)
        .exclude(status=ScanStatus.REJECTED)
        .prefetch_related(None)
        .order_by("created_at")
    ):
        first = first_injection.get(scan.subject_id)
        if first is None or scan.injection_id != first.pk:
            continue
        on_file[scan.subject_id].append(scan.hours_after_injection)
        point = time_point_of(scan.hours_after_injection)
        if point is not None:
            scans.setdefault((scan.subject_id, point), scan)
    rows = []
    counts: dict[str, int] = defaultdict(int)
    for subject in subject_list:
        row = GridRow(subject)
        zone = subject.site.time_zone
        injection = first_injection.get(subject.pk)
        consent = consents.get(subject.pk)
        if injection is not None:
            row.cells.append(Cell(DONE, site_time.stamp(injection.administered_at, zone)))
        elif _closed(subject):
            row.cells.append(Cell(NOT_APPLICABLE, f"subject {subject.status}"))
        else:
            row.cells.append(Cell(EXPECTED, "not injected yet"))
        for hours in IMAGING_SCHEDULE_HOURS:
            done = scans.get((subject.pk, hours))
            uncovered = None if done is not None else _not_covered(subject, consent, hours, on_file[subject.pk], now)
            if done is not None:
                cell = Cell(DONE, f"scan #{done.pk} · {done.status}", link=str(done.pk))
            elif uncovered is not None:
                cell = uncovered
            elif injection is None:
                cell = Cell(NOT_APPLICABLE if _closed(subject) else EXPECTED, "after the injection")
            else:
                due = injection.administered_at + dt.timedelta(hours=hours)
                closes = due + dt.timedelta(hours=TIME_POINT_WINDOW_HOURS)
                if now > closes:
                    state = NOT_APPLICABLE if _closed(subject) else OVERDUE
                    cell = Cell(state, f"was due {site_time.stamp(due, zone)}")
                else:
                    cell = Cell(EXPECTED, f"due {site_time.stamp(due, zone)}")
            row.cells.append(cell)
        for cell in row.cells:
            counts[cell.state] += 1
        rows.append(row)
    columns = ["Injection"] + [f"{hours:g} h" for hours in IMAGING_SCHEDULE_HOURS]
    return {
        "columns": columns,
        "rows": rows,
        "counts": {state: counts.get(state, 0) for state in STATES},
        "states": [(state, symbol, word) for state, (symbol, word) in STATES.items()],
        "window_hours": TIME_POINT_WINDOW_HOURS,
    }


# --------------------------------------------------------------------------- correction history

_RECORD_WORDS = {
    "trials.subject": "subject",
    "trials.subjectidentity": "identity",
    "trials.consent": "consent",
    "trials.injection": "injection",
    "trials.nanoparticlelot": "lot",
    "trials.cellbatch": "batch",
    "imaging.scan": "scan",
}


@dataclass
class Correction:
    sequence: int | None  # None while the event waits to be chained
    when: dt.datetime
    who: str
    record: str
    action: str
    changes: list[tuple[str, object, object]]
    reason: str
    hidden: bool = False
    site: Site | None = None  # whose clock ``when`` is shown on; None: the event is no site's (UTC)


def _action_words(action: int) -> str:
    try:
        return AuditAction(action).name.replace("_", " ").lower()
    except ValueError:
        return str(action)


def _pairs(changes: dict) -> list[tuple[str, object, object]]:
    out = []
    for name, value in sorted(changes.items()):
        if isinstance(value, list) and len(value) == 2:
            out.append((name, value[0], value[1]))
        else:
            out.append((name, None, value))
    return out


def corrections(user, records, *, subject: Subject | None = None) -> list[Correction]:
    """The corrections of ``records`` (model instances the caller looked up through a
    scoped selector), oldest first. An identity correction's reason and fields are shown
    to those who may read the subject's identity only; the trail keeps keyed fingerprints
    of identity values, never the values, so no value of it is shown to anyone."""
    pairs = [(obj._meta.label_lower, obj.pk) for obj in records]
    phi = subject is not None and access.can_read_identity(user, subject)
    if subject is not None:
        pairs.append(("trials.subjectidentity", subject.pk))
    events = list(correction_history(pairs))
    sites = Site.objects.in_bulk({event.site_id for event in events if event.site_id})
    rows = []
    for event in events:
        identity = event.object_type == "trials.subjectidentity"
        hidden = identity and not phi
        changes = [] if hidden else _pairs(event.changes or {})
        if identity:
            changes = [(name, "(fingerprint)", "(fingerprint)") for name, _, _ in changes]
        rows.append(
            Correction(
                sequence=event.sequence,
                when=event.occurred_at,
                who=event.actor_username or "the system",
                record=f"{_RECORD_WORDS.get(event.object_type, event.object_type)} #{event.object_id}",
                action=_action_words(event.action),
                changes=changes,
                reason="" if hidden else event.reason,
                hidden=hidden,
                site=sites.get(event.site_id),
            )
        )
    return rows


# --------------------------------------------------------------------------- upload history


def scan_history(user, *, site: str = "", status: str = "") -> QuerySet[Scan]:
    """Scans of the user's sites, newest first, with their upload and uploader."""
    scans = (
        imaging_selectors.scans_visible_to(user)
        .select_related("upload", "created_by", "injection")
        .prefetch_related(None)
        .order_by("-created_at", "-id")
    )
    if site.isdigit():
        scans = scans.filter(subject__site_id=int(site))
    if status:
        scans = scans.filter(status=status)
    return scans


def open_uploads(user, *, site: str = "") -> QuerySet[Upload]:
    """Scan uploads that did not (or not yet) become a scan: in progress or terminated."""
    uploads = (
        imaging_selectors.uploads_visible_to(user)
        .filter(kind=Upload.Kind.SCAN, scan__isnull=True)
        .select_related("created_by", "subject", "scanner__site")
        .order_by("-created_at")
    )
    if site.isdigit():
        uploads = uploads.filter(scanner__site_id=int(site))
    return uploads
