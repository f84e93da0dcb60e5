"""Rows of the scan pipeline written directly (no files, no services), for access-control
and query-count tests. Tests of behaviour build their data through the services."""

from __future__ import annotations

import factory

from imaging.models import Alert, Measurement, Reconstruction, RegionOfInterest, Scan, Scanner, SystemMatrix, Upload
from tests import factories as f


class ScannerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Scanner

    site = factory.SubFactory(f.SiteFactory)
    name = factory.Sequence(lambda n: f"MPI-{n}")
    manufacturer = "Bruker"
    model = "MPI 25/20 FF"
    base_frequency_hz = 2.5e6
    dividers = [102, 96]
    drive_amplitudes_t = [0.012, 0.012]
    gradient_t_per_m = [-1.0, -1.0, 2.0]


class SystemMatrixFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SystemMatrix

    scanner = factory.SubFactory(ScannerFactory)
    name = factory.Sequence(lambda n: f"calibration {n}")
    tracer_product = "VivoTrax (ferucarbotran)"
    file = "imaging/system_matrices/none.mdf"
    size_bytes = 1000
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    validation_report = {"valid": True, "kind": "calibration", "version": "2.1.0", "problems": []}
    grid_size = [12, 12, 1]
    field_of_view_m = [0.024, 0.024, 0.001]
    field_of_view_center_m = [0.0, 0.0, 0.0]
    frequencies_count = 273
    receive_channels = 2
    snr_summary = {"max": 100.0, "median": 2.0, "above_3": 100, "above_5": 50}
    delta_concentration_mol_per_l = 0.05
    base_frequency_hz = 2.5e6
    dividers = [102, 96]
    drive_amplitudes_t = [0.012, 0.012]


class ScanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Scan

    injection = factory.SubFactory(f.InjectionFactory)
    subject = factory.LazyAttribute(lambda o: o.injection.subject)
    scanner = factory.LazyAttribute(lambda o: ScannerFactory(site=o.subject.site))
    hours_after_injection = 24.0
    filename = "scan.mdf"
    file = "imaging/scans/none.mdf"
    size_bytes = 1000
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    status = Scan.Status.QUANTIFIED


class ReconstructionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Reconstruction

    scan = factory.SubFactory(ScanFactory)
    attempt = 1
    system_matrix = factory.LazyAttribute(lambda o: SystemMatrixFactory(scanner=o.scan.scanner))
    system_matrix_sha256 = factory.LazyAttribute(lambda o: o.system_matrix.sha256)
    input_sha256 = factory.LazyAttribute(lambda o: o.scan.sha256)
    params: dict = {}
    software_version = {"recon": "0.1.0"}
    file = "imaging/reconstructions/none.mdf"
    sha256 = "0" * 64


class RoiFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RegionOfInterest

    subject = factory.SubFactory(f.SubjectFactory)
    name = factory.Sequence(lambda n: f"roi-{n}")
    kind = "target"
    geometry = {"shape": "sphere", "center_m": [0.0, 0.004, 0.0], "radius_m": [0.0026] * 3}


class MeasurementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Measurement

    reconstruction = factory.SubFactory(ReconstructionFactory)
    scan = factory.LazyAttribute(lambda o: o.reconstruction.scan)
    roi = factory.LazyAttribute(lambda o: RoiFactory(subject=o.reconstruction.scan.subject))
    roi_name = factory.LazyAttribute(lambda o: o.roi.name)
    roi_kind = factory.LazyAttribute(lambda o: o.roi.kind)
    iron_ng = 1000.0
    uncertainty_ng = 50.0
    cell_count = 80000.0
    retention_percent = 40.0
    retention_uncertainty_percent = 2.0  # 50 ng of the 2500 ng injected that make 1000 ng 40 %
    off_target_percent = None
    detection_limit_ng = 60.0
    detected = True
    voxels = 16


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    scan = factory.SubFactory(ScanFactory)
    subject = factory.LazyAttribute(lambda o: o.scan.subject)
    kind = Alert.Kind.OFF_TARGET
    value_percent = 35.0
    threshold_percent = 20.0
    message = "Off-target iron 35 % exceeds 20 %."


class UploadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Upload

    injection = factory.SubFactory(f.InjectionFactory)
    subject = factory.LazyAttribute(lambda o: o.injection.subject)
    scanner = factory.LazyAttribute(lambda o: ScannerFactory(site=o.subject.site))
    hours_after_injection = 0.0
    filename = "scan.mdf"
    length = 1000
    sha256 = "0" * 64
    path = "imaging/uploads/none.part"
    created_by = factory.SubFactory(f.UserFactory)
