"""The dose injected so far: what "% of the dose injected so far" on the live page divides by.

Pure computation (no database): the live worker (each metrics event) and the session's
record (``web.live_data``) compute it from the same inputs, so the live page and the record
draw the same curve.

Definition, at a frame ``f`` of the stream:

- the **whole dose** ``D``: the injection's iron (cells administered x pg Fe per cell,
  ``imaging.selectors.injected_iron_ng``);
- the injection **runs** from its start mark to its stop mark, except between a pause mark
  and the resume mark after it. A mark's position is its ``frame`` (the next frame of the
  stream when the mark was entered; a mark entered before the stream: frame 0), so frame
  ``f`` is running when the last mark at or before ``f`` is a start or a resume mark;
- the **running time** ``r(f)``: the running frames from 0 to ``f`` (``f`` included) x the
  frame duration (the stream's, ``LiveSession.frame_duration_s``);
- the platform assumes the planned rate: the whole dose over the planned duration ``T``
  (``planned_duration``: the injection's own ``planned_duration_s`` where its record gives
  one, else the platform default ``settings.LIVE_INJECTION_EXPECTED_S``; the same duration
  after which the target-low alert is checked), so the **dose injected so far** is
  ``D x min(1, r(f) / T)``; ``T = 0`` means a bolus (the whole dose at the start mark);
- from the **stop mark** on, the whole dose has been given: ``D``;
- **not known** (None) before the start mark, when there is no start mark, when the frame
  duration is unknown or the whole dose is unknown. The percent figures then stay percents
  of the whole dose (the metrics event's ``dose_basis``).

The percent of the dose injected so far is ``100 x iron / dose injected so far``, not shown
(None) while the dose so far is under ``MIN_FRACTION`` of the whole dose: a few seconds into
the injection the division would turn noise into hundreds of percent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

START, PAUSE, RESUME, STOP = "injection_start", "injection_pause", "injection_resume", "injection_stop"
#: Under this fraction of the whole dose given, no percent of the dose so far is shown.
MIN_FRACTION = 0.05
#: The basis of the percent figures when the dose so far is known / not known.
BASIS_SO_FAR = "dose injected so far"
BASIS_WHOLE = "whole dose"


#: Where the planned duration comes from (``PlannedDuration.source``).
FROM_RECORD = "the injection's record"
FROM_DEFAULT = "platform default"


@dataclass(frozen=True)
class PlannedDuration:
    seconds: float  # T: the whole dose over this many seconds of running time (0: a bolus)
    source: str  # FROM_RECORD or FROM_DEFAULT

    @property
    def from_record(self) -> bool:
        return self.source == FROM_RECORD


def planned_duration(injection) -> PlannedDuration:
    """The planned duration used for ``injection`` (the one home of this rule): its own
    ``planned_duration_s`` where the record gives one, else the platform default
    ``settings.LIVE_INJECTION_EXPECTED_S``."""
    own = getattr(injection, "planned_duration_s", None) if injection is not None else None
    if own is not None:
        return PlannedDuration(float(own), FROM_RECORD)
    return PlannedDuration(float(settings.LIVE_INJECTION_EXPECTED_S), FROM_DEFAULT)


def planned_duration_s(injection) -> float:
    """``planned_duration(injection).seconds``."""
    return planned_duration(injection).seconds


@dataclass(frozen=True)
class DoseSoFar:
    ng: float | None  # the dose injected so far, ng Fe (None: not known)
    fraction: float | None  # of the whole dose
    state: str  # the injection at this frame: not started, running, paused, stopped

    @property
    def basis(self) -> str:
        return BASIS_SO_FAR if self.ng is not None else BASIS_WHOLE

    def percent(self, iron_ng: float | None) -> float | None:
        """``iron_ng`` in % of the dose injected so far (None while not known or under
        ``MIN_FRACTION`` of the whole dose)."""
        if iron_ng is None or self.ng is None or self.fraction is None or self.fraction < MIN_FRACTION:
            return None
        return 100.0 * float(iron_ng) / self.ng


def dose_so_far(
    marks: Iterable[tuple[str, int | None]],
    frame: int,
    *,
    whole_ng: float | None,
    frame_duration_s: float | None,
    expected_s: float,
) -> DoseSoFar:
    """The dose injected so far at ``frame`` (see the module docstring) from the session's
    ``marks`` as (kind, frame) in the order entered."""
    state, started_at, running = "not started", None, 0
    for kind, mark_frame in marks:
        at = int(mark_frame or 0)
        if at > frame:
            break
        if kind in (START, RESUME) and state in ("not started", "paused"):
            state, started_at = "running", at
        elif kind in (PAUSE, STOP) and state == "running":
            running += at - int(started_at or 0)
            state, started_at = ("paused" if kind == PAUSE else "stopped"), None
        elif kind == STOP:
            state = "stopped"
    if state == "running":
        running += frame + 1 - int(started_at or 0)
    if whole_ng is None or not whole_ng > 0 or state == "not started":
        return DoseSoFar(None, None, state)
    if state == "stopped":
        return DoseSoFar(float(whole_ng), 1.0, state)
    if not frame_duration_s or frame_duration_s <= 0:
        return DoseSoFar(None, None, state)
    fraction = 1.0 if expected_s <= 0 else min(1.0, running * float(frame_duration_s) / float(expected_s))
    return DoseSoFar(float(whole_ng) * fraction, fraction, state)
