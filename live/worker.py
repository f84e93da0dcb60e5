"""The live worker: one session's frames in, its event stream out.

A ``LiveWorker`` keeps the session's engine (``recon.live.LiveEngine``: the operator and
the region functionals, built once) resident and loops over the transport's frame
blocks (``live.transport``; the unacknowledged ones first):

1. the engine's region iron for every frame of the block; one ``metrics`` event per
   foreground frame, in frame order (``live.monitoring.frame_metrics``);
2. the alert rules on the block (``live.monitoring.AlertRules``): each finding becomes a
   ``LiveAlert`` row with its audit event (``live.services.alerts.alert_raise``) and an
   ``alert`` event;
3. an ``image`` event (the maximum-intensity projection of the mean of the frames since
   the last image) at most every ``IMAGE_INTERVAL_S``; when the worker is behind (more
   blocks waiting, or lag over budget) images are skipped: foreground frames that end up
   in no image are counted in ``frames_dropped``. Display frames may be dropped, metrics
   never;
4. the checkpoint, in one transaction: the block's ``LiveMetric`` rows and one UPDATE of
   ``frames_processed``, ``engine_state``, ``lag_ms``, ``frames_dropped`` (conditional on
   this worker's claim: a worker whose lease was taken over stops); then the block is
   acknowledged to the transport.

A ``health`` event goes out at least every second. An ``end`` control block ends the
stream (``ended`` with the scan), an ``abort`` block with status ``aborted``.

Restart: a new worker restores the engine from ``engine_state`` and skips the frames
below ``frames_processed``; the metrics events a dead worker published after its last
checkpoint are found in the event stream (read once at start) and not published again,
so every foreground frame's metrics event is published exactly once.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.errors import RuleViolation
from imaging import uploads
from imaging.models import RegionOfInterest
from imaging.selectors import injected_iron_ng
from live.dose import dose_so_far, planned_duration_s
from live.models import LiveMark, LiveMetric, LiveSession
from live.monitoring import DOSE_BASIS, AlertFinding, AlertRules, Regions, frame_metrics
from live.services.alerts import alert_raise
from live.transport import get_transport
from recon.quantify import detection_limits

log = logging.getLogger(__name__)

# worker_id of a session whose stream the live worker has finished (``ended`` published).
FINISHED = "finished"
IMAGE_INTERVAL_S = 0.15  # images at >= 5/s while frames flow
HEALTH_INTERVAL_S = 0.8  # checked at least every read_block_ms (0.2 s): one health event per <= 1 s
# A projection larger than this per side is reduced (block maximum) before it is sent.
MAX_IMAGE_SIDE = 128
# Frames kept by the engine for an image (recon.live.IMAGE_HISTORY).
IMAGE_FRAMES = 16
# A final session whose control block never comes (lost with an in-memory transport):
# ended after this many idle seconds.
FINAL_IDLE_S = 5.0

EngineFactory = Callable[..., Any]

#: The health event's ``monitoring`` while the engine is built at the stream's start.
PREPARING = (
    "live engine preparing (a calibration's first session builds its operator); "
    "frames are recorded, live numbers follow once it is ready"
)


class EngineUnavailable(Exception):
    """The session cannot be reconstructed live (its header, calibration or regions): the
    worker still follows the stream to its end, with no metrics, and says why in ``health``.
    ``code`` "system_matrix_mismatch": the stream does not fit the calibration (a technical alert)."""

    def __init__(self, message: str, code: str = "engine_unavailable"):
        super().__init__(message)
        self.code = code


def live_params():
    """The live engine's plan. The live operator keeps the LIVE_MAX_ROWS rows of highest
    calibration SNR: its cost per frame is rows x regions (functionals) and rows x voxels (images)."""
    from recon.params import ReconParams

    return ReconParams(solver="fast", max_rows=settings.LIVE_MAX_ROWS)


def build_engine(
    calibration_path,
    fields: dict,
    dtype: str,
    roi_records: list[dict],
    *,
    operator_cache_dir,
    calibration_sha256: str | None = None,
    frequency_selection: list[int] | None = None,
):
    """The session's ``recon.live.LiveEngine`` (EngineUnavailable when it cannot be built).
    ``calibration_sha256``: the registered ``SystemMatrix.sha256`` (the 2.5 GB file is not hashed again)."""
    from recon.live import LiveEngine, LiveStreamError, StreamLayout

    try:
        layout = StreamLayout.from_fields(fields, dtype, frequency_selection)
        return LiveEngine.build(
            calibration_path,
            layout,
            roi_records,
            operator_cache_dir=operator_cache_dir,
            params=live_params(),
            calibration_sha256=calibration_sha256,
        )
    except LiveStreamError as exc:
        raise EngineUnavailable(str(exc), exc.code) from exc
    except (ValueError, OSError) as exc:
        raise EngineUnavailable(str(exc)) from exc


def prepare_engine(session_id: int) -> list[str]:
    """Fill the live cache for a session before its stream starts (``recon.live.prepare``:
    the calibration's selected rows, the operator, the subject's region functionals), so the
    worker's engine build at the first frame only loads them, and record the outcome on the
    session (``engine_prepared_at`` or ``engine_preparation_error``: ``LiveSession.engine_readiness``).
    Returns the preparation's notes; nothing to prepare (no system matrix yet): []."""
    s = LiveSession.objects.select_related("system_matrix").get(pk=session_id)
    if s.system_matrix is None:
        return []
    records, _ = roi_records(s.subject)
    if not records:  # the calibration's part still helps the next session on it
        notes = prepare_calibration(s.system_matrix, None)
        _record_preparation(session_id, error="the subject has no regions of interest to monitor live")
        return notes
    try:
        notes = prepare_calibration(s.system_matrix, records)
    except Exception as exc:
        _record_preparation(session_id, error=str(exc) or type(exc).__name__)
        raise
    _record_preparation(session_id)
    return notes


def _record_preparation(session_id: int, *, error: str = "") -> None:
    LiveSession.objects.filter(pk=session_id).update(
        engine_prepared_at=None if error else timezone.now(), engine_preparation_error=error[:2000]
    )


def prepare_calibration(system_matrix, records: list[dict] | None = None) -> list[str]:
    """The live cache's calibration part (and, given ROI records, the regions' part) for a
    registered ``SystemMatrix``."""
    from recon.live import prepare

    cache = Path(settings.LIVE_OPERATOR_CACHE_DIR)
    cache.mkdir(parents=True, exist_ok=True)
    prepared = prepare(
        uploads.media_path(system_matrix.file),
        records,
        params=live_params(),
        cache_dir=cache,
        calibration_sha256=system_matrix.sha256 or None,
    )
    return prepared.notes


def stream_frequency_selection(system_matrix) -> list[int] | None:
    """The frequencies a spectra stream must carry for ``system_matrix`` (1-based rfft bins,
    ``recon.live.stream_frequency_selection``: the live engine's rows with ``live_params()``
    and the scan pipeline's with its plan, ``imaging.services.scan_steps.default_recon_params``), or None without a system matrix or when
    its file cannot be read."""
    from imaging.services.scan_steps import default_recon_params
    from recon.live import stream_frequency_selection as selection
    from recon.mdf import MDFError

    if system_matrix is None:
        return None
    try:
        return selection(
            uploads.media_path(system_matrix.file),
            params=live_params(),
            offline_params=default_recon_params(),
            calibration_sha256=system_matrix.sha256 or None,
        )
    except (ValueError, OSError, MDFError) as exc:
        log.warning("system matrix #%s: no frequency selection: %s", system_matrix.pk, exc)
        return None


def roi_records(subject) -> tuple[list[dict], list[str]]:
    """The subject's regions (every scan's, ``scan`` unset) as the engine's geometry records,
    and the names of those it cannot use live (label volumes)."""
    records, skipped = [], []
    for roi in RegionOfInterest.objects.filter(subject=subject, scan__isnull=True).order_by("name", "id"):
        if roi.geometry:
            records.append({"name": roi.name, "kind": roi.kind, **roi.geometry})
        else:
            skipped.append(roi.name)
    return records, skipped


def reduce_projection(image: np.ndarray, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Block maxima so that no side exceeds ``max_side`` (a projection stays a projection)."""
    step = int(np.ceil(max(image.shape) / max_side)) if max(image.shape) > max_side else 1
    if step == 1:
        return image
    nx, ny = (-(-image.shape[0] // step)) * step, (-(-image.shape[1] // step)) * step
    padded = np.zeros((nx, ny), dtype=image.dtype)
    padded[: image.shape[0], : image.shape[1]] = image
    return padded.reshape(nx // step, step, ny // step, step).max(axis=(1, 3))


class LiveWorker:
    """Runs one session's live monitoring (see the module docstring)."""

    def __init__(
        self,
        session_id: int,
        transport=None,
        *,
        engine_factory: EngineFactory | None = None,
        worker_id: str = "",
        stop_event: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        read_block_ms: int = 200,
    ):
        self.session_id = session_id
        self.transport = transport if transport is not None else get_transport()
        self.engine_factory = engine_factory or build_engine
        self.worker_id = worker_id
        self.stop_event = stop_event or threading.Event()
        self.clock = clock
        self.read_block_ms = read_block_ms
        self.status: str | None = None  # "ended" | "aborted" once the stream is finished
        self.lease_lost = False
        self.engine: Any = None
        self.unavailable = ""
        self.notes: list[str] = []
        self._frames_since_image = 0
        self._last_image_at = 0.0
        self._last_health_at = 0.0
        self._idle_since: float | None = None
        self._last_fg: tuple[int, float] | None = None
        self._ready = False

    # ------------------------------------------------------------------ setup

    def _setup(self) -> None:
        s = LiveSession.objects.select_related("subject__trial", "injection__batch", "system_matrix").get(
            pk=self.session_id
        )
        self.session = s
        self.frames_processed = int(s.frames_processed)
        self.frames_dropped = int(s.frames_dropped)
        self.lag_ms = s.lag_ms
        self.published_up_to, ended = self._published_so_far()
        if ended is not None:
            # A worker before this one published the end and died before recording it.
            self._record_finish(ended)
            return
        try:
            self.injected_ng: float | None = injected_iron_ng(s.injection)
        except RuleViolation:
            self.injected_ng = None
        # The injection's planned duration (its record's, else the platform default), read
        # once: the dose so far of every metrics event and the target-low alert's timing.
        self.planned_s = planned_duration_s(s.injection)
        records, skipped = roi_records(s.subject)
        self.notes = ["provisional: the recording's offline quantification is authoritative"]
        if skipped:
            self.notes.append(f"regions defined by a label volume are not monitored live: {', '.join(skipped)}")
        try:
            if not s.header or s.system_matrix is None:
                raise EngineUnavailable("the stream has no accepted header or no system matrix")
            if s.engine_prepared_at is None:
                # The build below may take a minute (a calibration's first session): say so now.
                self._health(monitoring=PREPARING)
            cache = Path(settings.LIVE_OPERATOR_CACHE_DIR)
            cache.mkdir(parents=True, exist_ok=True)
            self.engine = self.engine_factory(
                uploads.media_path(s.system_matrix.file),
                s.header.get("fields") or {},
                s.dtype or s.header.get("dtype"),
                records,
                operator_cache_dir=cache,
                calibration_sha256=s.system_matrix.sha256 or None,
                **(
                    {"frequency_selection": s.header["frequency_selection"]}
                    if s.header.get("payload") == "spectra"
                    else {}
                ),
            )
        except (EngineUnavailable, ValueError, OSError) as exc:
            self.engine = None
            self.unavailable = f"live monitoring unavailable: {exc}"
            log.warning("live session #%s: %s", s.pk, self.unavailable)
            if getattr(exc, "code", "") == "system_matrix_mismatch":
                self._raise([AlertFinding("system_matrix_mismatch", None, None, None, None, str(exc))])
        if s.engine_prepared_at is None and s.header and s.system_matrix is not None:
            if self.engine is not None:
                _record_preparation(s.pk)
            self._health(monitoring=self.unavailable or "live")  # the "preparing" above is over
        if self.engine is not None and self.frames_processed > 0 and s.engine_state:
            try:
                self.engine.restore(bytes(s.engine_state))
            except ValueError as exc:  # a checkpoint of another engine (calibration or regions changed)
                self.notes.append(f"the background estimate restarted at frame {self.frames_processed}: {exc}")
                log.warning("live session #%s: engine state not restored: %s", s.pk, exc)
        regions = (
            Regions(tuple(self.engine.region_names), tuple(self.engine.region_kinds))
            if self.engine is not None
            else Regions((), ())
        )
        self.regions = regions
        self.rules = AlertRules(
            regions=regions,
            threshold_percent=float(s.subject.trial.off_target_alert_percent),
            injected_ng=self.injected_ng,
            frame_duration_s=s.frame_duration_s,
            sustain=settings.LIVE_ALERT_SUSTAIN_BLOCKS,
            lag_budget_ms=float(settings.LIVE_LAG_BUDGET_MS),
            expected_percent=float(settings.LIVE_TARGET_EXPECTED_PERCENT),
            injection_expected_s=self.planned_s,
            stream_started_at=(s.header or {}).get("started_at"),
            spill=self.engine.spill if self.engine is not None else None,
            next_frame=self.frames_processed,
        )

    def _published_so_far(self) -> tuple[int, dict | None]:
        """(the last frame whose metrics event is in the event stream, the ``ended`` event
        if there is one): what a worker before this one published."""
        last, ended, after = -1, None, None
        while True:
            events = self.transport.read_events(self.session_id, after, block_ms=0)
            if not events:
                return last, ended
            for event_id, event in events:
                after = event_id
                if event.get("type") == "metrics":
                    last = max(last, int(event["frame"]))
                elif event.get("type") == "ended":
                    ended = event

    # ------------------------------------------------------------------ loop

    def run(self, *, max_blocks: int | None = None) -> str | None:
        """Process the stream until it ends (returns "ended" or "aborted"), ``stop_event`` is
        set or the claim is lost (None), or ``max_blocks`` frame blocks were processed (None:
        ``run`` again continues; the session is loaded once)."""
        if not self._ready:
            self._setup()
            self._ready = True
        blocks_done = 0
        while self.status is None and not self.stop_event.is_set() and not self.lease_lost:
            blocks = self.transport.read_frames(self.session_id, block_ms=self.read_block_ms)
            for i, block in enumerate(blocks):
                if block.kind == "frames":
                    self._frames(block, behind=i < len(blocks) - 1)
                else:
                    self._control(block)
                if self.status is not None or self.lease_lost:
                    break
                blocks_done += 1
                if max_blocks is not None and blocks_done >= max_blocks:
                    return None
            self._health(idle=not blocks)
        return self.status

    def _frames(self, block, *, behind: bool) -> None:
        first = int(block.first_frame)
        n = len(block.acquired_at)
        skip = max(0, self.frames_processed - first)
        if skip >= n:
            self.transport.ack_frames(self.session_id, [block.entry_id])
            return
        frames = block.frames[skip:]
        background = np.asarray(block.is_background[skip:], dtype=bool)
        acquired = np.asarray(block.acquired_at[skip:], dtype=np.float64)
        first += skip
        findings = self.rules.frames_arrived(first, acquired)
        rows: list[LiveMetric] = []
        foreground = np.flatnonzero(~background)
        iron = np.zeros((0, 0))
        marks: list[tuple[str, int | None]] = []
        so_far = None  # the dose so far at the block's last foreground frame
        if self.engine is not None:
            try:
                result = self.engine.push(frames, background)
            except ValueError as exc:
                self.engine = None
                self.unavailable = f"live monitoring stopped at frame {first}: {exc}"
                log.warning("live session #%s: %s", self.session_id, self.unavailable)
            else:
                iron = np.asarray(result.iron_ng, dtype=np.float64)
                lod = np.asarray(self.engine.detection_limit_ng, dtype=np.float64)
                marks = self._marks() if foreground.size else []
                for j in foreground:
                    frame = first + int(j)
                    rois, target, off = frame_metrics(
                        self.regions,
                        iron[j],
                        np.asarray(result.uncertainty_ng[j]),
                        detection_limits(lod, self.engine.spill, iron[j]),
                        self.injected_ng,
                    )
                    acquired_at, published_at = float(acquired[j]), self.clock()
                    so_far = dose_so_far(
                        marks,
                        frame,
                        whole_ng=self.injected_ng,
                        frame_duration_s=self.session.frame_duration_s,
                        expected_s=self.planned_s,
                    )
                    target_ng = sum(r["iron_ng"] or 0.0 for r in rois.values() if r["kind"] == "target")
                    event = {
                        "type": "metrics",
                        "frame": frame,
                        "acquired_at": acquired_at,
                        "published_at": published_at,
                        "rois": rois,
                        "target_percent_of_injected": target,
                        "dose_basis": DOSE_BASIS,
                        "dose_ng": self.injected_ng,
                        "injection_state": so_far.state,
                        "dose_so_far_ng": so_far.ng,
                        "target_percent_of_dose_so_far": so_far.percent(target_ng) if target is not None else None,
                        "off_target_percent": off,
                        "provisional": True,
                    }
                    if frame > self.published_up_to:
                        self.transport.publish_event(self.session_id, event)
                        self.published_up_to = frame
                    rows.append(
                        LiveMetric(
                            session_id=self.session_id,
                            frame=frame,
                            acquired_at=acquired_at,
                            published_at=published_at,
                            rois=rois,
                            target_percent_of_injected=target,
                            off_target_percent=off,
                        )
                    )
        self.lag_ms = (self.clock() - float(acquired[-1])) * 1000.0
        if self.engine is not None and foreground.size:
            findings += self.rules.block(
                frames=first + foreground,
                acquired_at=acquired[foreground],
                iron=iron[foreground],
                lod=np.asarray(self.engine.detection_limit_ng, dtype=np.float64),
                lag_ms=self.lag_ms,
                # With marks, complete as the dose so far of the block's last frame says.
                injection_complete=(
                    None if not marks or so_far is None else so_far.state == "stopped" or (so_far.fraction or 0) >= 1
                ),
            )
            self._last_fg = (first + int(foreground[-1]), float(acquired[foreground[-1]]))
        elif self.engine is not None:
            findings += self.rules.block(
                frames=np.zeros(0, dtype=int), acquired_at=acquired[:0], iron=iron[:0], lod=np.zeros(0), lag_ms=None
            )
        self._raise(findings)
        if self.engine is not None:
            self._frames_since_image += int(foreground.size)
            late = self.lag_ms > float(settings.LIVE_LAG_BUDGET_MS)
            due = self.clock() - self._last_image_at >= IMAGE_INTERVAL_S
            if self._frames_since_image and not behind and not late and due:
                self._image()
        self._checkpoint(first + len(acquired), rows)
        if not self.lease_lost:
            self.transport.ack_frames(self.session_id, [block.entry_id])
        self._health()

    def _marks(self) -> list[tuple[str, int | None]]:
        """The session's injection marks as (kind, frame), in the order entered (``live.dose``)."""
        return list(
            LiveMark.objects.filter(session_id=self.session_id).order_by("at", "id").values_list("kind", "frame")
        )

    def _raise(self, findings: list[AlertFinding]) -> None:
        for finding in findings:
            alert = alert_raise(
                session=self.session,
                kind=finding.kind,
                message=finding.message,
                frame=finding.frame,
                acquired_at=finding.acquired_at,
                value_percent=finding.value_percent,
                threshold_percent=finding.threshold_percent,
            )
            if alert is not None:
                self.transport.publish_event(
                    self.session_id,
                    {
                        "type": "alert",
                        "id": alert.pk,
                        "kind": alert.kind,
                        "frame": alert.frame,
                        "acquired_at": alert.acquired_at,
                        "created_at": alert.created_at.timestamp(),  # the page shows it on the site's clock
                        "value_percent": alert.value_percent,
                        "threshold_percent": alert.threshold_percent,
                        "message": alert.message,
                    },
                )

    def _image(self) -> None:
        last = min(self._frames_since_image, IMAGE_FRAMES)
        self.frames_dropped += self._frames_since_image - last
        volume = np.asarray(self.engine.image(last=last), dtype=np.float64)
        projection = reduce_projection(volume.max(axis=2)).astype("<f4")
        if volume.ndim == 3 and volume.shape[2] > 1:
            # A 3D image: kept for the page's chosen slice (``live.slices``), not sent to every viewer.
            self.transport.put_volume(self.session_id, self._last_fg[0] if self._last_fg else None, volume)
        self.transport.publish_event(
            self.session_id,
            {
                "type": "image",
                "frame": self._last_fg[0] if self._last_fg else None,
                "frames": last,
                "shape": [int(v) for v in volume.shape],
                "mip_shape": [int(v) for v in projection.shape],
                "encoding": "base64-float32-le",
                "mip_z": base64.b64encode(projection.tobytes()).decode("ascii"),
                "max_ng": float(volume.max()) if volume.size else 0.0,
                "unit": "ng Fe per voxel",
                "provisional": True,
            },
        )
        self._frames_since_image = 0
        self._last_image_at = self.clock()

    def _health(self, *, idle: bool = False, monitoring: str = "") -> None:
        """Publish a health event (at most every HEALTH_INTERVAL_S, unless ``monitoring`` says
        what the monitor is doing instead of monitoring)."""
        now = self.clock()
        if idle:
            self._idle_since = self._idle_since or now
        else:
            self._idle_since = None
        if now - self._last_health_at < HEALTH_INTERVAL_S and not monitoring:
            return
        self._last_health_at = now
        row = LiveSession.objects.filter(pk=self.session_id).values(
            "status", "frames_received", "frames_recorded", "scan_id"
        )[0]
        final = row["status"] in (LiveSession.Status.ENDED, LiveSession.Status.ABORTED)
        end_here = final and self._idle_since is not None and now - self._idle_since >= FINAL_IDLE_S
        if end_here and int(row["frames_recorded"]) > self.frames_processed:
            self.notes.append(
                f"frames {self.frames_processed}-{row['frames_recorded'] - 1} never reached the live monitor "
                "(they are in the recording)"
            )
        self.transport.publish_event(
            self.session_id,
            {
                "type": "health",
                "frames_received": row["frames_received"],
                "frames_recorded": row["frames_recorded"],
                "frames_processed": self.frames_processed,
                "frames_dropped": self.frames_dropped,
                "lag_ms": self.lag_ms,
                "monitoring": monitoring or self.unavailable or "live",
                "notes": self.notes,
            },
        )
        if end_here:
            # The session is over but its control block never came (an in-memory transport
            # lost with its process, a publish that failed after the service): end here. The
            # recording has every frame; the notes say which never reached the monitor.
            self._finish(row["status"], row["scan_id"])

    # ------------------------------------------------------------------ end

    def _control(self, block) -> None:
        if block.kind == "end":
            scan = block.info.get("scan")
            if scan is None:
                scan = LiveSession.objects.filter(pk=self.session_id).values_list("scan_id", flat=True)[0]
            if self._last_fg is not None:
                self._raise(self.rules.at_end(*self._last_fg))
            self._finish(LiveSession.Status.ENDED, scan, entry_id=block.entry_id)
        else:
            self._finish(LiveSession.Status.ABORTED, None, entry_id=block.entry_id)

    def _finish(self, status: str, scan: int | None, *, entry_id: str | None = None) -> None:
        if self.engine is not None and self._frames_since_image:
            self._image()
        ended = {"type": "ended", "scan": scan, "status": str(status)}
        self.transport.publish_event(self.session_id, ended)
        self._record_finish(ended, entry_id=entry_id)

    def _record_finish(self, ended: dict, *, entry_id: str | None = None) -> None:
        with transaction.atomic():
            updated = LiveSession.objects.filter(pk=self.session_id, worker_id=self.worker_id).update(
                frames_processed=self.frames_processed,
                frames_dropped=self.frames_dropped,
                lag_ms=self.lag_ms,
                engine_state=self.engine.state() if self.engine is not None else None,
                worker_id=FINISHED,
                lease_until=None,
            )
        if not updated:
            self.lease_lost = True
            return
        if entry_id is not None:
            self.transport.ack_frames(self.session_id, [entry_id])
        self.transport.forget(self.session_id)
        self.status = ended["status"]

    def _checkpoint(self, frames_processed: int, rows: list[LiveMetric]) -> None:
        state = self.engine.state() if self.engine is not None else None
        with transaction.atomic():
            updated = LiveSession.objects.filter(pk=self.session_id, worker_id=self.worker_id).update(
                frames_processed=frames_processed,
                frames_dropped=self.frames_dropped,
                lag_ms=self.lag_ms,
                engine_state=state,
            )
            if updated:
                LiveMetric.objects.bulk_create(rows, ignore_conflicts=True)
        if not updated:
            log.warning("live session #%s: the claim of worker %r was taken over", self.session_id, self.worker_id)
            self.lease_lost = True
            return
        self.frames_processed = frames_processed
