"""Demo scans for the demo trial: a scanner and a simulated system matrix at sites A and
B, and simulated follow-up scans at 0, 24, 48 and 72 h for every injected demo subject
(retention falling, off-target rising), uploaded through the same services as a site
would and processed by the worker beside the server.

Each demo scanner's library also holds the simulator's default calibration (what
``python -m recon simulate --output-dir DIR`` writes: 2D, dividers 102/96, 20 x 20 grid,
seed 0) for the demo tracer, so that a scan made with ``python -m recon simulate`` is
accepted by the demo like one from the scanner.

Idempotent (what exists is left alone) and quick: 2D, a 12 x 12 grid, short frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.errors import RuleViolation
from imaging import selectors, tasks
from imaging.models import RegionOfInterest, Scan, Scanner, SystemMatrix
from imaging.services.rois import roi_define
from imaging.services.scan_uploads import UploadRequest, upload_append, upload_create
from imaging.services.scanners import simulated_scanner_register, system_matrix_register
from recon import phantoms
from recon import simulate as sim
from recon.physics import Particles
from trials.models import Injection, Role, Site, Trial
from trials.selectors import first_site_member

PROTOCOL = "MPI-CT-001"
GRID = (12, 12, 1)
TIME_POINTS_H = (0, 24, 48, 72)
# Share of the injected iron per organ at each time point: the graft loses cells and
# the lungs, liver and spleen pick them up.
COURSE = {
    0: {"target": 0.70, "lungs": 0.030, "liver": 0.10},
    24: {"target": 0.55, "lungs": 0.045, "liver": 0.18},
    48: {"target": 0.42, "lungs": 0.050, "liver": 0.24},
    72: {"target": 0.33, "lungs": 0.050, "liver": 0.29},
}
SCANNER_NAME = "Preclinical MPI (simulated)"
SIMULATOR_DEFAULT_NAME = "python -m recon simulate default calibration (20x20, dividers 102/96)"


class Command(BaseCommand):
    help = "Create demo scanners, system matrices and simulated scans (processed by the Celery worker)."

    def handle(self, *args, **options):
        if settings.PRODUCTION:
            raise CommandError("load_demo_scans refuses to run with MPI_ENV=production.")
        trial = Trial.objects.filter(protocol_number=PROTOCOL).first()
        if trial is None:
            raise CommandError(f"The demo trial {PROTOCOL} is not loaded: run load_demo first.")
        rng = np.random.default_rng(2026)
        scanner_model = sim.scanner_preset(2, fast=True)
        background = sim.scanner_background_spectrum(scanner_model, rng, sim.DEFAULT_NOISE_STD_V)
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            calibration = None
            simulator_default = None
            lot = trial.nanoparticle_lots.order_by("id").first()
            tracer = lot.product if lot else "VivoTrax"
            for site in Site.objects.filter(trial=trial).order_by("code"):
                scanner = self._scanner(site, scanner_model)
                if (
                    not SystemMatrix.objects.filter(scanner=scanner, active=True)
                    .exclude(name=SIMULATOR_DEFAULT_NAME)
                    .exists()
                ):
                    if calibration is None:
                        calibration = self._calibration(tmp, scanner_model, rng, background)
                    system_matrix_register(
                        actor=None,
                        scanner=scanner,
                        name="Simulated 12x12 calibration (delta sample 0.05 mol/L)",
                        tracer_product=tracer,
                        source_path=calibration[0],
                    )
                    self.stdout.write(f"system matrix registered for scanner {scanner.name} at site {site.code}")
                if not SystemMatrix.objects.filter(scanner=scanner, name=SIMULATOR_DEFAULT_NAME).exists():
                    if simulator_default is None:
                        # Exactly what the CLI writes with no options (its defaults, seed 0).
                        simulator_default = sim.simulate_to_files(tmp / "simulator-default")["system_matrix"]
                    system_matrix_register(
                        actor=None,
                        scanner=scanner,
                        name=SIMULATOR_DEFAULT_NAME,
                        tracer_product=tracer,
                        source_path=simulator_default,
                    )
                    self.stdout.write(
                        f"the simulator's default calibration registered for scanner {scanner.name} at site {site.code}"
                    )
            sm_geometry = calibration[1] if calibration else self._geometry(scanner_model)
            queued = 0
            injections = (
                Injection.objects.filter(subject__trial=trial)
                .select_related("subject__site", "batch")
                .order_by("subject__code")
            )
            for injection in injections:
                queued += self._scans_for(injection, tmp, scanner_model, sm_geometry, rng, background)
        self.stdout.write(self.style.SUCCESS(f"Demo scans: {queued} uploaded and queued for processing."))

    def _scanner(self, site, model) -> Scanner:
        existing = Scanner.objects.filter(site=site, name=SCANNER_NAME).first()
        if existing:
            return existing
        return simulated_scanner_register(actor=None, site=site, name=SCANNER_NAME, model=model)

    @staticmethod
    def _geometry(model):
        fov, center = sim.system_matrix_geometry(model, GRID)
        return fov, center

    def _calibration(self, tmp, model, rng, background):
        matrix = sim.simulate_system_matrix(model, Particles(), GRID, rng=rng, background_spectrum=background)
        path = tmp / "system_matrix.mdf"
        sim.write_system_matrix_mdf(str(path), matrix)
        return path, (matrix.fov_m, matrix.center_m)

    def _scans_for(self, injection, tmp, model, geometry, rng, background) -> int:
        subject = injection.subject
        uploader = first_site_member(subject.site, Role.IMAGING_STAFF)
        if uploader is None:
            return 0
        fov, center = geometry
        injected_ng = selectors.injected_iron_ng(injection)
        layout = phantoms.mouse(fov, dims=2, target_iron_ng=1.0)
        if not RegionOfInterest.objects.filter(subject=subject, scan__isnull=True).exists():
            for inclusion in layout:
                roi = inclusion.as_roi()
                roi_define(actor=None, subject=subject, name=roi.pop("name"), kind=roi.pop("kind"), geometry=roi)
        count = 0
        scanner = Scanner.objects.get(site=subject.site, name=SCANNER_NAME)
        for hours in TIME_POINTS_H:
            if Scan.objects.filter(subject=subject, hours_after_injection=hours).exists():
                continue
            shares = COURSE[hours]
            per_lung = shares["lungs"] * injected_ng
            amounts = {
                "target": shares["target"] * injected_ng,
                "lungs": per_lung,
                "liver": shares["liver"] * injected_ng,
            }
            inclusions = tuple(dataclasses.replace(inc, iron_ng=amounts[inc.kind]) for inc in layout)
            raster = phantoms.rasterise(inclusions, GRID, fov, center, factor=3, dims=2)
            scan = sim.simulate_scan(model, Particles(), raster, rng=rng, frames=10, background_spectrum=background)
            path = tmp / f"{subject.code}-{hours}h.mdf"
            sim.write_scan_mdf(str(path), scan)
            try:
                self._upload(uploader, subject, injection, scanner, hours, path)
            except RuleViolation as refusal:
                # The demo shows the rule: e.g. a subject who withdrew longitudinal
                # imaging keeps the first scan, and the follow-ups are refused.
                self.stdout.write(f"{subject.code} {hours} h: upload refused ({refusal.code}): {refusal.message}")
                break
            count += 1
        return count

    @staticmethod
    def _upload(user, subject, injection, scanner, hours, path: Path) -> None:
        data = path.read_bytes()
        upload = upload_create(
            actor=user,
            request=UploadRequest(
                subject=subject,
                injection_id=injection.pk,
                scanner_id=scanner.pk,
                hours_after_injection=float(hours),
                sha256=hashlib.sha256(data).hexdigest(),
                filename=path.name,
                length=len(data),
            ),
        )
        with open(path, "rb") as fh:
            upload_append(actor=user, upload=upload, offset=0, source=fh, checksum=None, then=tasks.queue_next_step)
