"""The demo's live injection: a scanner whose frames stream, its calibration, and a recorded
injection stream to replay (``python manage.py demo_stream`` or ``python -m bridge replay``).

A simulated 2D stream (``recon.live_simulate``) of the demo subject's injection: the
graft fills during the injection and part of the cells go to the lungs, enough to raise
the off-target alert. The stream's dose is the injection's own iron (cells x pg Fe per
cell), so the live percentages are of the real record, and the injection's planned duration
is the simulated injection's (its start to stop frames x the frame duration, about 17 s):
set on the record through the correction service (audited, with its reason) when it differs,
so "% of the dose injected so far" runs in the demo at the simulated rate. Idempotent and
quick (a 12 x 12 grid); the files live under ``VAR_DIR/demo-live/``.
"""

from __future__ import annotations

import json as jsonlib
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.errors import RuleViolation
from imaging import selectors
from imaging.models import RegionOfInterest, Scanner, SystemMatrix
from imaging.services.rois import roi_define
from imaging.services.scan_uploads import assert_imaging_consent
from imaging.services.scanners import scanner_register, system_matrix_register
from recon import live_simulate
from recon import simulate as sim
from trials.models import Injection, Role, Trial
from trials.selectors import first_site_member
from trials.services.injections import injection_correct

PROTOCOL = "MPI-CT-001"
SCANNER_NAME = "Preclinical MPI, live stream (simulated)"
GRID = (12, 12, 1)
#: Frames of about 21.5 ms (46.4 frames/s), as the 3D Lissajous reference: the simulated
#: drive cycle (2D 0.65 ms, 3D 1.63 ms) averaged as many times as fit (num_averages).
REFERENCE_FRAME_S = 0.02154


def num_averages(dims: int) -> int:
    return max(1, round(REFERENCE_FRAME_S / sim.scanner_preset(dims).period_s))


FOREGROUND_FRAMES = 1600  # about 35 s of injection at 46.4 frames/s
BACKGROUND_FRAMES = (40, 20)
LUNG_FRACTION = 0.30  # above the trial's 20 % off-target threshold once the injection is under way


def demo_live_dir() -> Path:
    return Path(settings.VAR_DIR) / "demo-live"


#: The reason of the correction that gives the demo injection the simulated duration.
PLANNED_DURATION_REASON = (
    "Planned duration of the demo's simulated injection: its start to stop frames x the frame duration (truth.json)"
)


def planned_duration_of(truth: dict) -> Decimal:
    """The simulated injection's duration as the record holds it (s, to the millisecond)."""
    return Decimal(f"{live_simulate.injection_duration_s(truth):.3f}")


def give_planned_duration(injection: Injection, seconds: Decimal) -> bool:
    """Give the demo injection the simulated injection's duration, through the correction
    service as a coordinator of its site (audited, with its reason); nothing when it has it.
    Whether the record changed."""
    if injection.planned_duration_s is not None and Decimal(injection.planned_duration_s) == seconds:
        return False
    coordinator = first_site_member(injection.subject.site, Role.COORDINATOR)
    if coordinator is None:
        raise CommandError(f"Site {injection.subject.site.code} has no coordinator to record the planned duration.")
    injection_correct(
        actor=coordinator, injection=injection, reason=PLANNED_DURATION_REASON, planned_duration_s=seconds
    )
    return True


def demo_injection(trial: Trial) -> Injection | None:
    """The first injected demo subject at site A whose consent to imaging is in force."""
    for injection in (
        Injection.objects.filter(subject__trial=trial, subject__site__code="A")
        .select_related("subject", "batch")
        .order_by("subject__code", "id")
    ):
        if injection.batch.iron_per_cell_pg is None:
            continue
        try:
            assert_imaging_consent(injection.subject, injection=injection, hours_after_injection=0.0)
        except RuleViolation:
            continue
        return injection
    return None


class Command(BaseCommand):
    help = "Prepare the demo's live injection: a streaming scanner, its calibration and a stream to replay."

    def add_arguments(self, parser):
        parser.add_argument("--dims", type=int, choices=[2, 3], default=2, help="2D (default) or 3D stream")
        parser.add_argument("--grid", type=int, default=None, help="grid edge (default 12; 3D: 15)")
        parser.add_argument("--frames", type=int, default=FOREGROUND_FRAMES, help="foreground frames")
        parser.add_argument("--output", default=None, help="folder of the stream files (default var/demo-live)")
        parser.add_argument("--json", action="store_true", help="print only the JSON summary")

    def handle(self, *args, dims, grid, frames, output, json: bool, **options):
        if settings.PRODUCTION:
            raise CommandError("load_demo_live refuses to run with MPI_ENV=production.")
        trial = Trial.objects.filter(protocol_number=PROTOCOL).first()
        if trial is None:
            raise CommandError(f"The demo trial {PROTOCOL} is not loaded: run load_demo first.")
        injection = demo_injection(trial)
        if injection is None:
            raise CommandError("No injected demo subject at site A with imaging consent in force.")
        if frames < 10:
            raise CommandError("--frames must be at least 10.")
        edge = grid or (GRID[0] if dims == 2 else 15)
        size = (edge, edge, 1) if dims == 2 else (edge, edge, edge)
        folder = Path(output) if output else demo_live_dir()
        truth_path = folder / "truth.json"
        if not truth_path.exists():
            live_simulate.simulate_injection_stream(
                folder,
                dims=dims,
                grid=size,
                num_frames=frames,
                background_frames=BACKGROUND_FRAMES,
                dose_ng=selectors.injected_iron_ng(injection),
                lung_fraction=LUNG_FRACTION,
                num_averages=num_averages(dims),
                seed=2026,
            )
        planned = planned_duration_of(jsonlib.loads(truth_path.read_text()))
        give_planned_duration(injection, planned)
        scanner = self._scanner(injection, dims)
        lot = injection.batch.nanoparticle_lot
        if lot is None:
            raise CommandError(f"The demo injection's batch {injection.batch.batch_code} is not labelled.")
        calibration = SystemMatrix.objects.filter(scanner=scanner, active=True).first()
        if calibration is None:
            calibration = system_matrix_register(
                actor=None,
                scanner=scanner,
                name=f"Simulated {'x'.join(map(str, size[:dims]))} live calibration (delta sample 0.05 mol/L)",
                tracer_product=lot.product,
                source_path=folder / "calibration.mdf",
            )
        subject = injection.subject
        if not RegionOfInterest.objects.filter(subject=subject, scan__isnull=True).exists():
            records = jsonlib.loads((folder / "rois.json").read_text())["rois"]
            for record in records:
                geometry = {k: v for k, v in record.items() if k not in ("name", "kind")}
                roi_define(actor=None, subject=subject, name=record["name"], kind=record["kind"], geometry=geometry)
        summary = {
            "injection": injection.pk,
            "subject": subject.code,
            "scanner": scanner.pk,
            "system_matrix": calibration.pk,
            "stream": str(folder / "stream.mdf"),
            "truth": str(truth_path),
            "planned_duration_s": float(planned),
        }
        line = jsonlib.dumps(summary)
        self.stdout.write(line if json else f"Demo live injection ready: {line}")

    @staticmethod
    def _scanner(injection: Injection, dims: int) -> Scanner:
        site = injection.subject.site
        name = SCANNER_NAME if dims == 2 else SCANNER_NAME.replace("live stream", "3D live stream")
        existing = Scanner.objects.filter(site=site, name=name).first()
        if existing is not None:
            return existing
        model = sim.scanner_preset(dims)
        return scanner_register(
            actor=None,
            site=site,
            name=name,
            manufacturer="recon.simulate",
            model=f"{dims}D FFP Lissajous, streaming",
            topology="FFP",
            base_frequency_hz=model.base_frequency_hz,
            dividers=list(model.dividers),
            drive_amplitudes_t=list(model.drive_amplitude_t),
            gradient_t_per_m=list(model.gradient_t_per_m),
        )
