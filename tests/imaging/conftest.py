"""Fixtures of the scan pipeline: one small simulated calibration and scan per session
(2D, 12 x 12 grid, short frames: about a second on one core), and a subject at site A
ready to be scanned: scanner, system matrix in the library, injection, ROIs."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.apps import apps

from audit.models import AuditEvent
from imaging.services.rois import roi_define
from imaging.services.scanners import scanner_register, system_matrix_register
from recon.simulate import simulate_to_files
from tests import factories as f
from tests.imaging.orthanc import orthanc  # noqa: F401  (fixture: a local Orthanc PACS)

SIM_OPTIONS = dict(dims=2, grid=(12, 12, 1), fast=True, frames=10)


@pytest.fixture(scope="session")
def simulate(tmp_path_factory):
    """``simulate(seed, **options)`` -> simulate_to_files result, cached per session."""
    cache = {}

    def make(seed: int = 1, **options):
        key = (seed, tuple(sorted(options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"sim{seed}")
            cache[key] = simulate_to_files(out, seed=seed, **{**SIM_OPTIONS, **options})
        return cache[key]

    return make


@pytest.fixture(scope="session")
def sim(simulate):
    return simulate(1)


def define_rois(subject, rois_path, actor=None):
    for record in json.loads(Path(rois_path).read_text())["rois"]:
        geometry = {k: v for k, v in record.items() if k not in ("name", "kind")}
        roi_define(actor=actor, subject=subject, name=record["name"], kind=record["kind"], geometry=geometry)


@pytest.fixture
def pipeline(ready, site_a, coordinator_a, imaging_a, sim):
    """Subject at site A with consent, an injection whose iron equals the phantom's total,
    a scanner, the simulated calibration registered, and the phantom's ROIs."""
    subject, consent, batch = ready
    pg = float(batch.iron_per_cell_pg)
    cells = round(sim["injected_iron_ng"] * 1000 / pg)
    injection = f.InjectionFactory(batch=batch, subject=subject, administered_cells=cells)
    scanner = scanner_register(
        actor=None,
        site=site_a,
        name="Preclinical MPI",
        manufacturer="Bruker",
        model="MPI 25/20 FF",
        topology="FFP",
        base_frequency_hz=2.5e6,
        dividers=[34, 32],
        drive_amplitudes_t=[0.012, 0.012],
        gradient_t_per_m=[-1.0, -1.0, 2.0],
    )
    system_matrix = system_matrix_register(
        actor=None,
        scanner=scanner,
        name="simulated 12x12 calibration",
        tracer_product=batch.nanoparticle_lot.product,
        source_path=sim["system_matrix"],
    )
    define_rois(subject, sim["rois"])
    return SimpleNamespace(
        subject=subject,
        consent=consent,
        batch=batch,
        injection=injection,
        scanner=scanner,
        system_matrix=system_matrix,
        sim=sim,
        user=imaging_a,
    )


def _imaging_counts() -> dict:
    models = list(apps.get_app_config("imaging").get_models()) + list(apps.get_app_config("trials").get_models())
    return {m._meta.label: m._default_manager.count() for m in models} | {"audit": AuditEvent.objects.count()}


def _files(settings) -> set:
    root = Path(settings.MEDIA_ROOT)
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture
def nothing_changed(settings):
    """``with nothing_changed(allow_audit=0):`` fails unless every imaging and trials table
    has as many rows afterwards and no file appeared or vanished under MEDIA_ROOT.
    ``audit=1`` allows exactly one new audit event (a refusal's own record)."""

    @contextlib.contextmanager
    def check(audit: int = 0):
        before, files = _imaging_counts(), _files(settings)
        yield
        after = _imaging_counts()
        assert after.pop("audit") == before.pop("audit") + audit
        assert after == before
        assert _files(settings) == files

    return check
