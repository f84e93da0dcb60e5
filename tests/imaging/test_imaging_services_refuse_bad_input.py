"""The imaging services' refusals that the API tests do not reach: each refusal says why,
with its stable code, and writes nothing (no row, no file, no audit event)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from config.api_errors import status_for
from config.errors import RuleViolation
from imaging.cache import SystemMatrixCache
from imaging.models import RegionOfInterest, Scan, Scanner, ScanStatus, SystemMatrix, Upload

# The service functions under test, in one place (imaging.services may become a package).
from imaging.services.rois import roi_define
from imaging.services.scan_claims import scan_fail, scan_retry
from imaging.services.scan_steps import scan_quantify, scan_reconstruct, scan_validate
from imaging.services.scan_uploads import UploadRequest, upload_append, upload_complete, upload_create, upload_terminate
from imaging.services.scanners import match_system_matrix, scanner_register, system_matrix_register
from tests import factories as f
from tests.imaging.helpers import uploaded_scan

pytestmark = pytest.mark.django_db


def refused(code: str, call, *args, **kwargs) -> RuleViolation:
    with pytest.raises(RuleViolation) as raised:
        call(*args, **kwargs)
    assert raised.value.code == code, raised.value.message
    return raised.value


# --------------------------------------------------------------------------- scanners


SCANNER = dict(
    name="Second MPI",
    manufacturer="Bruker",
    model="MPI 25/20 FF",
    topology="FFP",
    base_frequency_hz=2.5e6,
    gradient_t_per_m=[-1.0, -1.0, 2.0],
)


def test_only_a_coordinator_registers_a_scanner(site_a, imaging_a, nothing_changed):
    with nothing_changed():
        error = refused(
            "forbidden",
            scanner_register,
            actor=imaging_a,
            site=site_a,
            dividers=[34, 32],
            drive_amplitudes_t=[0.012, 0.012],
            **SCANNER,
        )
    assert status_for(error.code) == 403 and "register scanners" in error.message


@pytest.mark.parametrize(
    "dividers, amplitudes", [([], []), ([34, 32], [0.012]), ([34, 0], [0.012, 0.012]), ([34, -2], [0.01, 0.01])]
)
def test_a_scanner_needs_one_positive_divider_per_drive_amplitude(
    site_a, coordinator_a, nothing_changed, dividers, amplitudes
):
    with nothing_changed():
        error = refused(
            "invalid_drive_field",
            scanner_register,
            actor=coordinator_a,
            site=site_a,
            dividers=dividers,
            drive_amplitudes_t=amplitudes,
            **SCANNER,
        )
    assert status_for(error.code) == 400 and error.field == "dividers"
    assert not Scanner.objects.filter(name="Second MPI").exists()


# --------------------------------------------------------------------------- system matrices


def register(pipeline, actor, source, **extra):
    return system_matrix_register(
        actor=actor,
        scanner=pipeline.scanner,
        name="another calibration",
        tracer_product=pipeline.batch.nanoparticle_lot.product,
        source_path=source,
        **extra,
    )


@pytest.mark.parametrize("who", ["investigator_a", "coordinator_a"])
def test_only_imaging_staff_register_a_system_matrix(pipeline, request, who, nothing_changed):
    actor = request.getfixturevalue(who)
    with nothing_changed():
        error = refused("forbidden", register, pipeline, actor, pipeline.sim["system_matrix"])
    assert status_for(error.code) == 403


def test_a_lot_of_another_trial_is_refused_before_any_copy(pipeline, imaging_a, nothing_changed):
    other_lot = f.NanoparticleLotFactory()  # its own trial
    with nothing_changed():
        error = refused(
            "lot_of_other_trial",
            register,
            pipeline,
            imaging_a,
            pipeline.sim["system_matrix"],
            nanoparticle_lot=other_lot,
        )
    assert error.field == "nanoparticle_lot"


def test_a_file_that_is_no_mdf_is_refused_and_its_copy_removed(pipeline, imaging_a, nothing_changed, tmp_path):
    junk = tmp_path / "junk.mdf"
    junk.write_bytes(os.urandom(5000))
    with nothing_changed():
        error = refused("invalid_system_matrix", register, pipeline, imaging_a, junk)
    assert status_for(error.code) == 400 and error.message.startswith("The calibration file is not valid:")


def test_a_measurement_is_not_a_calibration(pipeline, imaging_a, nothing_changed):
    with nothing_changed():
        error = refused("not_a_calibration", register, pipeline, imaging_a, pipeline.sim["measurement"])
    assert "measurement MDF, not a calibration" in error.message


def test_the_same_calibration_twice_is_refused_and_the_second_copy_removed(pipeline, imaging_a, nothing_changed):
    with nothing_changed():
        error = refused("duplicate_system_matrix", register, pipeline, imaging_a, pipeline.sim["system_matrix"])
    assert "already in the library of scanner Preclinical MPI" in error.message
    assert SystemMatrix.objects.count() == 1


@pytest.mark.parametrize("change", ["base frequency", "one amplitude", "amplitude count", "dividers"])
def test_no_system_matrix_fits_a_scan_acquired_with_another_drive_field(pipeline, change):
    sm = pipeline.system_matrix
    fitting = {
        "base_frequency_hz": sm.base_frequency_hz,
        "dividers": sm.dividers,
        "drive_amplitudes_t": sm.drive_amplitudes_t,
    }
    assert match_system_matrix(pipeline.scanner, pipeline.injection, fitting) == sm
    amplitudes = list(sm.drive_amplitudes_t)
    other = {
        "base frequency": {"base_frequency_hz": sm.base_frequency_hz * 1.2},
        "one amplitude": {"drive_amplitudes_t": [amplitudes[0], amplitudes[-1] * 1.5]},
        "amplitude count": {"drive_amplitudes_t": amplitudes[:1]},
        "dividers": {"dividers": [sm.dividers[0], sm.dividers[-1] + 1]},
    }[change]
    acquisition = fitting | other
    error = refused("no_system_matrix", match_system_matrix, pipeline.scanner, pipeline.injection, acquisition)
    mt = "/".join(f"{a * 1e3:g}" for a in acquisition["drive_amplitudes_t"])
    assert f"drive amplitudes {mt} mT, base frequency {acquisition['base_frequency_hz']:g} Hz" in error.message
    assert f"available: #{sm.pk}" in error.message


# --------------------------------------------------------------------------- uploads


def request_for(pipeline, **overrides) -> UploadRequest:
    values = dict(
        subject=pipeline.subject,
        injection_id=pipeline.injection.pk,
        scanner_id=pipeline.scanner.pk,
        hours_after_injection=24.0,
        sha256="ab" * 32,
        filename="scan.mdf",
        length=1000,
    )
    return UploadRequest(**(values | overrides))


@pytest.mark.parametrize(
    "overrides, code, status",
    [
        ({"length": 0}, "empty_upload", 400),
        ({"sha256": "not hex"}, "invalid_sha256", 400),
        ({"sha256": "g" * 64}, "invalid_sha256", 400),
        ({"hours_after_injection": -1.0}, "invalid_time_point", 400),
        ({"injection_id": 0}, "injection_not_found", 400),
        ({"scanner_id": 0}, "scanner_not_found", 400),
    ],
)
def test_an_upload_with_bad_metadata_is_refused(pipeline, nothing_changed, overrides, code, status):
    with nothing_changed():
        error = refused(code, upload_create, actor=pipeline.user, request=request_for(pipeline, **overrides))
    assert status_for(error.code) == status


def test_a_scanner_of_another_site_is_not_found(pipeline, site_b, nothing_changed):
    other = scanner_register(actor=None, site=site_b, dividers=[34, 32], drive_amplitudes_t=[0.012, 0.012], **SCANNER)
    with nothing_changed():
        refused(
            "scanner_not_found", upload_create, actor=pipeline.user, request=request_for(pipeline, scanner_id=other.pk)
        )


def test_a_withdrawn_subject_gets_no_new_scans(pipeline, nothing_changed):
    pipeline.subject.status = "withdrawn"
    pipeline.subject.save()
    with nothing_changed():
        error = refused("subject_withdrawn", upload_create, actor=pipeline.user, request=request_for(pipeline))
    assert error.field == "subject"


def test_a_terminated_upload_takes_no_more_bytes(pipeline, django_capture_on_commit_callbacks, nothing_changed):
    upload = upload_create(actor=pipeline.user, request=request_for(pipeline))
    with django_capture_on_commit_callbacks(execute=True):
        upload_terminate(actor=pipeline.user, upload=upload)
    upload.refresh_from_db()
    with nothing_changed():
        error = refused(
            "upload_terminated",
            upload_append,
            actor=pipeline.user,
            upload=upload,
            offset=0,
            source=io.BytesIO(b"x"),
            checksum=None,
        )
    assert status_for(error.code) == 404
    assert Upload.objects.get().offset == 0


def test_completing_an_upload_of_a_file_already_on_file_is_refused(api, pipeline, nothing_changed):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    upload = Upload.objects.get()
    with nothing_changed():
        error = refused("duplicate_scan", upload_complete, actor=pipeline.user, upload=upload)
    assert f"as scan #{scan.pk}" in error.message


# --------------------------------------------------------------------------- retries


def test_a_scan_that_did_not_fail_cannot_be_retried(api, pipeline, nothing_changed):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    with nothing_changed():
        error = refused("not_retryable", scan_retry, actor=pipeline.user, scan=scan)
    assert error.message == f"Scan #{scan.pk} is received: nothing to retry."


def test_a_failed_scan_that_is_not_retryable_stays_failed(api, pipeline, nothing_changed):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    type(scan).objects.filter(pk=scan.pk).update(status="failed", retryable=False)
    scan.refresh_from_db()
    with nothing_changed():
        error = refused("not_retryable", scan_retry, actor=pipeline.user, scan=scan)
    assert "is failed and not retryable" in error.message


def test_a_worker_that_lost_its_claim_cannot_fail_the_scan(api, pipeline, nothing_changed):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    with nothing_changed():
        assert scan_fail(scan_id=scan.pk, token="not-the-claim", reason="late worker", retryable=True) is False
    assert Scan.objects.get(pk=scan.pk).status == ScanStatus.RECEIVED


def test_a_scan_without_regions_fails_quantification_and_a_retry_resumes_after_reconstruction(api, pipeline):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    scan_validate(scan_id=scan.pk, token="t")
    scan_reconstruct(scan_id=scan.pk, token="t", cache=SystemMatrixCache(10**9))
    RegionOfInterest.objects.filter(subject=pipeline.subject).delete()
    scan_quantify(scan_id=scan.pk, token="t")
    scan.refresh_from_db()
    assert scan.status == ScanStatus.FAILED and scan.retryable
    assert scan.status_reason.startswith(f"No region of interest is defined for scan #{scan.pk}")
    assert not scan.measurements.exists()

    retried = scan_retry(actor=pipeline.user, scan=scan)
    assert retried.status == ScanStatus.VALIDATED  # the reconstruction is kept; quantify is next
    assert scan.reconstructions.count() == 1


# --------------------------------------------------------------------------- regions of interest


def define(pipeline, actor, **kwargs):
    values = dict(actor=actor, subject=pipeline.subject, name="new region", kind="liver")
    return roi_define(**(values | kwargs))


SPHERE = {"shape": "sphere", "center_m": [0, 0, 0], "radius_m": 0.002}


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"kind": "brain", "geometry": SPHERE}, "invalid_kind"),
        ({}, "geometry_or_labels"),
        ({"geometry": {"shape": "cone"}}, "invalid_geometry"),
        ({"geometry": {"shape": "sphere", "center_m": [0, 0, 0]}}, "invalid_geometry"),
        ({"geometry": {"shape": "box", "center_m": [0, 0], "half_size_m": [1e-3] * 3}}, "invalid_geometry"),
        ({"geometry": {"shape": "sphere", "center_m": [0, 0, 0], "radius_m": "wide"}}, "invalid_geometry"),
        ({"geometry": {"shape": "sphere", "center_m": [0, 0, 2.0], "radius_m": 0.001}}, "invalid_geometry"),
        ({"geometry": {"shape": "sphere", "center_m": [0, 0, 0], "radius_m": -0.001}}, "invalid_geometry"),
    ],
)
def test_a_region_with_bad_geometry_or_kind_is_refused(pipeline, coordinator_a, nothing_changed, kwargs, code):
    with nothing_changed():
        error = refused(code, define, pipeline, coordinator_a, **kwargs)
    assert status_for(error.code) == 400


def test_a_region_on_a_scan_of_another_subject_is_refused(api, pipeline, coordinator_a, nothing_changed):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    other = f.SubjectFactory(site=pipeline.subject.site, code="MPI-CT-T01-A-0002")
    with nothing_changed():
        refused(
            "scan_of_other_subject",
            roi_define,
            actor=coordinator_a,
            subject=other,
            name="x",
            kind="liver",
            geometry=SPHERE,
            scan=scan,
        )


def test_a_second_region_of_the_same_name_is_refused(pipeline, coordinator_a, nothing_changed):
    define(pipeline, coordinator_a, geometry=SPHERE)
    with nothing_changed():
        error = refused("duplicate_roi", define, pipeline, coordinator_a, geometry=SPHERE)
    assert error.field == "name" and "already exists for this subject" in error.message


def test_only_roi_roles_define_regions(pipeline, nothing_changed):
    outsider = f.UserFactory()
    with nothing_changed():
        error = refused("forbidden", define, pipeline, outsider, geometry=SPHERE)
    assert status_for(error.code) == 403


def npy(array) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return SimpleUploadedFile("labels.npy", buffer.getvalue())


@pytest.mark.parametrize(
    "labels, label_value, code, words",
    [
        (np.ones((4, 4, 1), dtype=np.int32), None, "label_value_required", "positive integer"),
        (np.ones((4, 4, 1), dtype=np.int32), 0, "label_value_required", "positive integer"),
        (np.ones((4, 4, 1), dtype=np.float32), 1, "invalid_label_volume", "must be integers"),
        (np.ones((4, 4, 1), dtype=np.int32), 7, "invalid_label_volume", "label 7 marks no voxel"),
    ],
)
def test_a_label_volume_that_marks_nothing_usable_is_refused_and_not_kept(
    pipeline, coordinator_a, nothing_changed, labels, label_value, code, words
):
    with nothing_changed():
        error = refused(code, define, pipeline, coordinator_a, label_volume=npy(labels), label_value=label_value)
    assert words in error.message
    assert not RegionOfInterest.objects.filter(name="new region").exists()
