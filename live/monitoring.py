"""What the live numbers mean: a frame's published figures and the alert rules.

Pure computation over the engine's region iron (no database, no transport): the live
worker (``live.worker``) feeds it, ``live.services.alerts`` records what it finds.

Figures of a frame (the ``metrics`` event):
- ``target_percent_of_injected``: the iron of the target regions / the whole dose of the
  injection x 100 (cells x pg Fe per cell, ``imaging.selectors.injected_iron_ng``); None
  when the batch has no iron per cell or the subject no target region. The event says
  so: ``dose_basis`` "whole dose". Injection marks (``live.services.marks``) do not change
  it; the percent of the dose injected so far (marks and the planned rate) is
  ``live.dose``'s, published beside it by the worker.
- ``off_target_percent``: the iron of the detected off-target regions / the iron of all
  detected regions x 100, as the offline quantification defines it (negative estimates
  count as 0; a region is detected when its iron is above its detection limit); None
  while no region is detected.

Alert rules, evaluated per block of frames (one transport block, ~0.2 s of the stream),
on the block's mean region iron against the detection limit of that mean (the per-frame
noise limit / sqrt(foreground frames of the block), plus the spill-over bound of the other
regions' mean iron, ``recon.live.detection_limits``: averaging lowers the noise, not the leak):
- ``off_target_share``: the off-target share above the trial's threshold (the one the
  offline pipeline alerts on, ``Trial.off_target_alert_percent``) in ``sustain``
  consecutive blocks, never while no off-target region's iron is above its limit;
- ``off_target_detected``: an off-target region's iron above its detection limit in
  ``sustain`` consecutive blocks;
- ``target_low``: the target iron below ``expected_percent`` of the dose, checked only
  once the injection should be complete (over ``sustain`` consecutive blocks) and at the end
  of the stream (the mean of the last ``sustain`` blocks' frames). Complete: with injection
  marks, as the dose so far says (``live.dose``: the stop mark, or the planned duration of
  running injection after the start mark, pauses excluded); without marks, the planned
  duration (``injection_expected_s``, ``live.dose.planned_duration``) after the stream's start;
- ``frame_gap``: consecutive frames whose acquisition times differ by more than 3 frame
  durations, or frames missing from the stream's sequence;
- ``lag``: the live result later than ``lag_budget_ms`` after its frame was acquired, in
  ``sustain`` consecutive blocks.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from recon.quantify import detection_limits

OFF_TARGET_KINDS = frozenset({"lungs", "liver", "spleen", "other"})
TARGET_KIND = "target"
#: What ``target_percent_of_injected`` is a percent of (the metrics event's ``dose_basis``).
DOSE_BASIS = "whole dose"
# Acquisition times further apart than this many frame durations: frames were lost on the way.
FRAME_GAP_DURATIONS = 3.0


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _percent(part: float, whole: float | None) -> float | None:
    if whole is None or not whole > 0:
        return None
    return 100.0 * part / whole


@dataclass(frozen=True)
class Regions:
    names: tuple[str, ...]
    kinds: tuple[str, ...]

    @property
    def off_target(self) -> np.ndarray:
        return np.array([k in OFF_TARGET_KINDS for k in self.kinds], dtype=bool)

    @property
    def target(self) -> np.ndarray:
        return np.array([k == TARGET_KIND for k in self.kinds], dtype=bool)


def shares(regions: Regions, iron: np.ndarray, lod: np.ndarray, injected_ng: float | None):
    """(target % of injected, off-target % of detected, detected mask) of one set of region
    iron values (R,) against their detection limits (R,) (a NaN limit: not detected)."""
    with np.errstate(invalid="ignore"):
        detected = np.isfinite(iron) & (iron > lod)
    positive = np.where(np.isfinite(iron), np.maximum(iron, 0.0), 0.0)
    total = float(positive[detected].sum())
    off = float(positive[detected & regions.off_target].sum())
    target = None
    if regions.target.any():
        target = _percent(float(np.nansum(iron[regions.target])), injected_ng)
    off_pct = _percent(off, total) if detected.any() else None
    return target, off_pct, detected


def frame_metrics(
    regions: Regions, iron: np.ndarray, uncertainty: np.ndarray, lod: np.ndarray, injected_ng: float | None
) -> tuple[dict, float | None, float | None]:
    """(rois, target_percent_of_injected, off_target_percent) of one foreground frame."""
    rois = {
        name: {"kind": kind, "iron_ng": _finite(i), "uncertainty_ng": _finite(u), "detection_limit_ng": _finite(d)}
        for name, kind, i, u, d in zip(regions.names, regions.kinds, iron, uncertainty, lod, strict=True)
    }
    target, off, _ = shares(regions, iron, lod, injected_ng)
    return rois, target, off


@dataclass(frozen=True)
class AlertFinding:
    kind: str
    frame: int | None
    acquired_at: float | None
    value_percent: float | None
    threshold_percent: float | None
    message: str


@dataclass
class AlertRules:
    regions: Regions
    threshold_percent: float
    injected_ng: float | None
    frame_duration_s: float | None
    sustain: int = 3
    lag_budget_ms: float = 1000.0
    expected_percent: float = 50.0
    injection_expected_s: float = 600.0
    stream_started_at: float | None = None
    spill: np.ndarray | None = None  # (R, R) the engine's spill-over bound (recon.live): None = none
    next_frame: int | None = None  # the frame expected next (a block starting later: frames missing)
    _runs: dict = field(default_factory=dict)
    _recent: deque = field(default_factory=deque)  # (sum of iron (R,), frames) of the last blocks
    _last_acquired: float | None = None

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=self.sustain)

    def _sustained(self, kind: str, holds: bool) -> bool:
        """Whether ``holds`` has just become true for ``sustain`` consecutive blocks: once per
        episode, so an acknowledged alert is not raised again while its condition lasts,
        only after the condition has cleared and come back."""
        run = self._runs.get(kind, 0) + 1 if holds else 0
        self._runs[kind] = run
        return run == self.sustain

    def frames_arrived(self, first_frame: int, acquired_at: np.ndarray) -> list[AlertFinding]:
        """Gaps in a block of frames (background frames included) and before it."""
        found = []
        n = len(acquired_at)
        if self.next_frame is not None and first_frame > self.next_frame:
            missing = first_frame - self.next_frame
            found.append(
                AlertFinding(
                    "frame_gap",
                    first_frame,
                    float(acquired_at[0]) if n else None,
                    None,
                    None,
                    f"Frames {self.next_frame}-{first_frame - 1} ({missing}) never reached the live monitor.",
                )
            )
        if n and self.frame_duration_s:
            times = np.asarray(acquired_at, dtype=np.float64)
            if self._last_acquired is not None and self.next_frame == first_frame:
                times = np.concatenate([[self._last_acquired], times])
                offset = 1
            else:
                offset = 0
            gaps = np.diff(times)
            limit = FRAME_GAP_DURATIONS * self.frame_duration_s
            late = np.flatnonzero(gaps > limit)
            if late.size:
                i = int(late[0])
                frame = first_frame + i + 1 - offset
                found.append(
                    AlertFinding(
                        "frame_gap",
                        frame,
                        float(times[i + 1]),
                        None,
                        None,
                        f"Frame {frame} was acquired {gaps[i] * 1000:.0f} ms after the frame before it "
                        f"(frame duration {self.frame_duration_s * 1000:.1f} ms): frames were lost before the "
                        "platform.",
                    )
                )
        if n:
            self._last_acquired = float(acquired_at[-1])
            self.next_frame = first_frame + n
            if self.stream_started_at is None:
                self.stream_started_at = float(acquired_at[0])
        return found

    def block(
        self,
        *,
        frames: np.ndarray,
        acquired_at: np.ndarray,
        iron: np.ndarray,
        lod: np.ndarray,
        lag_ms: float | None,
        injection_complete: bool | None = None,
    ) -> list[AlertFinding]:
        """The findings after one block's foreground ``frames`` (indices, acquisition
        times) with their region ``iron`` (n, R) and the per-frame detection limits (R,).
        ``injection_complete``: whether the marked injection is complete at the block's last
        frame (``live.dose``: stopped, or run for its planned duration); None when nothing is
        marked (then: the planned duration after the stream's start)."""
        found: list[AlertFinding] = []
        if lag_ms is not None and self._sustained("lag", lag_ms > self.lag_budget_ms) and frames.size:
            found.append(
                AlertFinding(
                    "lag",
                    int(frames[-1]),
                    float(acquired_at[-1]),
                    None,
                    None,
                    f"Live results arrive {lag_ms:.0f} ms after acquisition, over the budget of "
                    f"{self.lag_budget_ms:.0f} ms for {self.sustain} blocks: the monitor is behind the scanner.",
                )
            )
        if not frames.size:
            return found
        n = frames.size
        mean = np.nanmean(iron, axis=0) if n else np.full(len(self.regions.names), np.nan)
        spill = self.spill if self.spill is not None else np.zeros((len(mean), len(mean)))
        lod_mean = detection_limits(np.asarray(lod, dtype=np.float64), spill, mean, n)
        self._recent.append((np.nansum(iron, axis=0), n))
        frame, at = int(frames[-1]), float(acquired_at[-1])
        _, off_pct, detected = shares(self.regions, mean, lod_mean, self.injected_ng)
        off_detected = detected & self.regions.off_target
        if self._sustained("off_target_detected", bool(off_detected.any())):
            names = [self.regions.names[i] for i in np.flatnonzero(off_detected)]
            i = int(np.flatnonzero(off_detected)[np.argmax(mean[off_detected])])
            found.append(
                AlertFinding(
                    "off_target_detected",
                    frame,
                    at,
                    _percent(float(mean[i]), self.injected_ng),
                    _percent(float(lod_mean[i]), self.injected_ng),
                    f"Off-target iron detected in {', '.join(names)}: {self.regions.names[i]} "
                    f"{mean[i]:.3g} ng above its detection limit {lod_mean[i]:.3g} ng "
                    f"for {self.sustain} blocks (provisional, live).",
                )
            )
        share_high = off_pct is not None and bool(off_detected.any()) and off_pct > self.threshold_percent
        if self._sustained("off_target_share", share_high):
            found.append(
                AlertFinding(
                    "off_target_share",
                    frame,
                    at,
                    off_pct,
                    self.threshold_percent,
                    f"Off-target iron {off_pct:.1f} % of detected iron exceeds the trial's alert threshold "
                    f"{self.threshold_percent:g} % for {self.sustain} blocks up to frame {frame} (provisional, live).",
                )
            )
        if injection_complete is None:
            due = self.stream_started_at is not None and at - self.stream_started_at >= self.injection_expected_s
        else:
            due = injection_complete
        low = self._target_low(frame, at, since="the injection should be complete") if due else None
        if self._sustained("target_low", low is not None) and low is not None:
            found.append(low)
        return found

    def _target_low(self, frame: int, at: float, *, since: str) -> AlertFinding | None:
        if self.injected_ng is None or not self.regions.target.any() or not self._recent:
            return None
        frames = sum(count for _, count in self._recent)
        iron = sum(total for total, _ in self._recent) / frames
        target = float(np.nansum(iron[self.regions.target]))
        pct = _percent(target, self.injected_ng)
        if pct is None or pct >= self.expected_percent:
            return None
        return AlertFinding(
            "target_low",
            frame,
            at,
            pct,
            self.expected_percent,
            f"Target iron {target:.3g} ng is {pct:.1f} % of the injected {self.injected_ng:.3g} ng, below the "
            f"expected {self.expected_percent:g} % ({since}; mean of the last {frames} frames, provisional, live).",
        )

    def at_end(self, frame: int | None, acquired_at: float | None) -> list[AlertFinding]:
        """The findings when the stream ends: the target iron against the expected fraction."""
        if frame is None or acquired_at is None:
            return []
        low = self._target_low(frame, acquired_at, since="at the end of the stream")
        return [low] if low is not None else []
