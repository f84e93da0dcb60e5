"""Registering a calibration (system matrix) in a scanner's library (issue #15, contract 1):
``manage.py register_system_matrix`` and ``POST /api/v1/system-matrices/`` from a completed
resumable upload (``kind calibration``), both audited; every refusal stores nothing.

Calibration files are simulated here (``recon.simulate`` through the session's ``simulate``
fixture): seed 2 is a calibration the pipeline's library does not hold yet."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import h5py
import pytest
from django.core.management import base as management_base
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.management.commands.register_system_matrix import Command
from imaging.models import Scan, Scanner, SystemMatrix, Upload
from imaging.services.scanners import scanner_register
from tests import factories as f
from tests.imaging import tus
from trials.models import Role

pytestmark = pytest.mark.django_db

NAME = "Recalibration after the coil service (delta 0.05 mol/L)"


def _library_files(settings) -> set[Path]:
    root = Path(settings.MEDIA_ROOT) / "imaging" / "system_matrices"
    return set(root.iterdir()) if root.exists() else set()


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def calibration(simulate):
    """A calibration file of the pipeline scanner's drive field that is not in its library."""
    return Path(simulate(2)["system_matrix"])


@pytest.fixture
def tracer(pipeline):
    return pipeline.batch.nanoparticle_lot.product


def _member(username, role, site):
    user = f.UserFactory(username=username)
    f.MembershipFactory(user=user, site=site, trial=site.trial, role=role)
    return user


@pytest.fixture
def imaging_b(site_b):
    return _member("imaging_b", Role.IMAGING_STAFF, site_b)


@pytest.fixture
def scanner_b(site_b):
    return scanner_register(
        actor=None,
        site=site_b,
        name="Boston MPI",
        manufacturer="Bruker",
        model="MPI 25/20 FF",
        topology="FFP",
        base_frequency_hz=2.5e6,
        dividers=[34, 32],
        drive_amplitudes_t=[0.012, 0.012],
        gradient_t_per_m=[-1.0, -1.0, 2.0],
    )


# --------------------------------------------------------------------------- the command


def test_the_command_registers_a_calibration_and_prints_its_json_last(pipeline, calibration, tracer, settings):
    out = io.StringIO()

    call_command(
        "register_system_matrix",
        str(calibration),
        scanner=pipeline.scanner.pk,
        name=NAME,
        tracer=tracer,
        user=pipeline.user.username,
        stdout=out,
    )

    printed = json.loads(out.getvalue().strip().splitlines()[-1])
    sm = SystemMatrix.objects.get(pk=printed["id"])
    assert (printed["name"], printed["scanner"], printed["tracer_product"]) == (NAME, pipeline.scanner.pk, tracer)
    assert printed["sha256"] == sm.sha256 == _sha256(calibration)
    assert printed["grid_size"] == [12, 12, 1] and printed["frequencies_count"] == sm.frequencies_count > 0
    assert printed["active"] is True and sm.registered_by == pipeline.user
    stored = Path(settings.MEDIA_ROOT) / sm.file
    assert stored.is_file() and _sha256(stored) == sm.sha256
    event = AuditEvent.objects.get(action=AuditAction.SYSTEM_MATRIX_REGISTERED, object_id=str(sm.pk))
    assert event.actor_username == pipeline.user.username and event.site_id == pipeline.scanner.site_id


def test_without_a_user_the_system_registers_and_is_audited(pipeline, calibration, tracer):
    out = io.StringIO()
    call_command(
        "register_system_matrix", str(calibration), scanner=pipeline.scanner.pk, name=NAME, tracer=tracer, stdout=out
    )
    sm_id = json.loads(out.getvalue().splitlines()[-1])["id"]
    event = AuditEvent.objects.get(action=AuditAction.SYSTEM_MATRIX_REGISTERED, object_id=str(sm_id))
    assert event.actor_username == "" and event.actor_id is None


@pytest.mark.parametrize(
    "case, words",
    [
        ("measurement", "not_a_calibration: The file is a measurement MDF, not a calibration"),
        ("junk", "invalid_system_matrix: The calibration file is not valid"),
        ("duplicate", "duplicate_system_matrix: This calibration"),
        ("coordinator", "forbidden: Only a imaging_staff at site A may register system matrices"),
        ("other tracer lot", "lot_of_other_tracer: Lot "),
        ("no such file", "No calibration file at"),
        ("no such scanner", "No scanner #"),
    ],
)
def test_a_refused_command_exits_1_with_one_line_and_stores_nothing(
    pipeline, calibration, tracer, coordinator_a, settings, tmp_path, case, words
):
    source, scanner, user, extra = calibration, pipeline.scanner.pk, pipeline.user.username, {}
    if case == "measurement":
        source = Path(pipeline.sim["measurement"])
    elif case == "junk":
        source = tmp_path / "junk.mdf"
        source.write_bytes(os.urandom(4096))
    elif case == "duplicate":
        source = Path(pipeline.sim["system_matrix"])
    elif case == "coordinator":
        user = coordinator_a.username
    elif case == "other tracer lot":
        extra = {"lot": f.NanoparticleLotFactory(trial=pipeline.subject.trial, product="Perimag").pk}
    elif case == "no such file":
        source = tmp_path / "missing.mdf"
    elif case == "no such scanner":
        scanner = 999_999
    rows, events, files = SystemMatrix.objects.count(), AuditEvent.objects.count(), _library_files(settings)

    with pytest.raises(CommandError) as refused:
        call_command(
            "register_system_matrix", str(source), scanner=scanner, name=NAME, tracer=tracer, user=user, **extra
        )

    assert refused.value.returncode == 1
    assert words in str(refused.value) and "\n" not in str(refused.value)
    assert SystemMatrix.objects.count() == rows and AuditEvent.objects.count() == events
    assert _library_files(settings) == files


def test_from_the_command_line_a_refusal_is_one_line_on_stderr_and_exit_1(pipeline, tracer, monkeypatch, capsys):
    # run_from_argv closes the database connections when done: not the test's own.
    monkeypatch.setattr(management_base.connections, "close_all", lambda: None)
    argv = ["manage.py", "register_system_matrix", pipeline.sim["measurement"]]
    argv += ["--scanner", str(pipeline.scanner.pk), "--name", NAME, "--tracer", tracer]

    with pytest.raises(SystemExit) as exited:
        Command().run_from_argv(argv)

    captured = capsys.readouterr()
    assert exited.value.code == 1 and captured.out == ""
    assert captured.err.count("\n") == 1 and "not_a_calibration" in captured.err
    assert SystemMatrix.objects.count() == 1


# --------------------------------------------------------------------------- the API


def _register(client, upload_id, scanner, tracer, **extra):
    body = {"upload": str(upload_id), "scanner": scanner.pk, "name": NAME, "tracer_product": tracer, **extra}
    return client.post("/api/v1/system-matrices/", body, format="json")


def test_imaging_staff_register_a_calibration_from_a_resumable_upload(
    api, pipeline, calibration, tracer, settings, django_capture_on_commit_callbacks
):
    client = api(pipeline.user)
    data = calibration.read_bytes()

    upload_id, last = tus.upload_calibration(client, data, scanner=pipeline.scanner.pk)

    assert "Scan-Id" not in last and Scan.objects.count() == 0  # a calibration makes no scan
    upload = Upload.objects.get(pk=upload_id)
    assert (upload.kind, upload.status, upload.subject_id) == ("calibration", "completed", None)
    part = Path(settings.MEDIA_ROOT) / upload.path
    assert part.read_bytes() == data

    with django_capture_on_commit_callbacks(execute=True):
        response = _register(client, upload_id, pipeline.scanner, tracer)

    assert response.status_code == 201, response.content
    body = response.json()
    sm = SystemMatrix.objects.get(pk=body["id"])
    assert body["sha256"] == sm.sha256 == hashlib.sha256(data).hexdigest() and sm.upload_id == upload.pk
    assert body["grid_size"] == [12, 12, 1] and body["scanner"] == pipeline.scanner.pk and body["active"] is True
    assert (Path(settings.MEDIA_ROOT) / sm.file).read_bytes() == data
    assert not part.exists()  # the library holds the bytes; the upload's copy is gone
    actions = list(
        AuditEvent.objects.filter(actor_username=pipeline.user.username)
        .order_by("sequence")
        .values_list("action", flat=True)
    )
    assert actions[-3:] == [
        AuditAction.UPLOAD_STARTED,
        AuditAction.UPLOAD_COMPLETED,
        AuditAction.SYSTEM_MATRIX_REGISTERED,
    ]


def test_the_same_upload_is_registered_once(api, pipeline, calibration, tracer):
    client = api(pipeline.user)
    upload_id, _ = tus.upload_calibration(client, calibration.read_bytes(), scanner=pipeline.scanner.pk)
    assert _register(client, upload_id, pipeline.scanner, tracer).status_code == 201
    events = AuditEvent.objects.count()

    again = _register(client, upload_id, pipeline.scanner, tracer)

    assert again.status_code == 409 and again.json()["error"]["code"] == "upload_already_registered"
    assert SystemMatrix.objects.count() == 2 and AuditEvent.objects.count() == events


def test_a_file_already_in_the_library_is_refused_before_a_byte_is_sent(api, pipeline):
    data = Path(pipeline.sim["system_matrix"]).read_bytes()
    uploads, events = Upload.objects.count(), AuditEvent.objects.count()

    response = tus.create_calibration(
        api(pipeline.user), length=len(data), scanner=pipeline.scanner.pk, sha256=tus.sha256_hex(data)
    )

    assert response.status_code == 409 and response.json()["error"]["code"] == "duplicate_system_matrix"
    assert Upload.objects.count() == uploads and AuditEvent.objects.count() == events


def _without_delta_concentration(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    with h5py.File(target, "a") as h5:
        h5["tracer/concentration"][...] = 0.0
    return target


@pytest.mark.parametrize(
    "case, code, words",
    [
        ("junk", "invalid_system_matrix", "The calibration file is not valid"),
        ("measurement", "not_a_calibration", "measurement MDF, not a calibration"),
        # recon's validator refuses it first: no reconstruction without the delta sample's concentration
        ("no delta concentration", "invalid_system_matrix", "/tracer/concentration"),
    ],
)
def test_a_file_that_is_no_usable_calibration_is_refused_with_400(
    api, pipeline, tracer, settings, tmp_path, django_capture_on_commit_callbacks, case, code, words
):
    if case == "junk":
        data = os.urandom(8192)
    elif case == "measurement":
        data = Path(pipeline.sim["measurement"]).read_bytes()
    else:
        data = _without_delta_concentration(Path(pipeline.sim["system_matrix"]), tmp_path / "nodelta.mdf").read_bytes()
    client = api(pipeline.user)
    upload_id, _ = tus.upload_calibration(client, data, scanner=pipeline.scanner.pk)
    part = Path(settings.MEDIA_ROOT) / Upload.objects.get(pk=upload_id).path
    rows, events, files = SystemMatrix.objects.count(), AuditEvent.objects.count(), _library_files(settings)

    with django_capture_on_commit_callbacks(execute=True):
        response = _register(client, upload_id, pipeline.scanner, tracer)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]
    assert SystemMatrix.objects.count() == rows and _library_files(settings) == files
    # The bytes can never be registered: the upload is closed, its file removed, the refusal recorded.
    assert Upload.objects.get(pk=upload_id).status == "terminated" and not part.exists()
    assert AuditEvent.objects.count() == events + 1
    refusal = AuditEvent.objects.order_by("-sequence").first()
    assert (refusal.action, refusal.object_id) == (AuditAction.UPLOAD_REFUSED, upload_id)
    assert refusal.changes["code"] == [None, code]
    again = _register(client, upload_id, pipeline.scanner, tracer)
    assert again.status_code == 404 and again.json()["error"]["code"] == "upload_terminated"


def test_it_validates_ownership(api, pipeline, calibration, tracer, imaging_b, scanner_b):
    """Another site's scanner or upload is not there: 404, nothing written."""
    upload_id, _ = tus.upload_calibration(api(pipeline.user), calibration.read_bytes(), scanner=pipeline.scanner.pk)
    data = calibration.read_bytes()
    uploads, events = Upload.objects.count(), AuditEvent.objects.count()
    other = api(imaging_b)

    start = tus.create_calibration(other, length=len(data), scanner=pipeline.scanner.pk, sha256=tus.sha256_hex(data))
    someone_elses_upload = _register(other, upload_id, scanner_b, tracer)
    someone_elses_scanner = _register(api(pipeline.user), upload_id, scanner_b, tracer)

    assert start.status_code == 404 and someone_elses_upload.status_code == 404
    assert someone_elses_scanner.status_code == 404
    assert Upload.objects.count() == uploads and AuditEvent.objects.count() == events
    assert SystemMatrix.objects.filter(upload_id=upload_id).count() == 0


@pytest.mark.parametrize(
    "who, status, code",
    [
        ("coordinator_a", 403, "forbidden"),
        ("investigator_a", 403, "forbidden"),
        ("monitor", 403, "forbidden"),
        ("sponsor", 404, "not_found"),  # a sponsor sees no calibration upload at all
    ],
)
def test_only_imaging_staff_of_the_site_register(api, pipeline, calibration, tracer, request, who, status, code):
    upload_id, _ = tus.upload_calibration(api(pipeline.user), calibration.read_bytes(), scanner=pipeline.scanner.pk)
    events = AuditEvent.objects.count()

    response = _register(api(request.getfixturevalue(who)), upload_id, pipeline.scanner, tracer)

    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert SystemMatrix.objects.count() == 1 and AuditEvent.objects.count() == events


def test_a_coordinator_cannot_start_a_calibration_upload(api, pipeline, calibration, coordinator_a):
    data = calibration.read_bytes()
    response = tus.create_calibration(
        api(coordinator_a), length=len(data), scanner=pipeline.scanner.pk, sha256=tus.sha256_hex(data)
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert Upload.objects.count() == 0


@pytest.mark.parametrize(
    "case, status, code",
    [
        ("scan upload", 400, "not_a_calibration_upload"),
        ("other scanner", 400, "upload_scanner_mismatch"),
        ("unfinished", 409, "upload_not_complete"),
    ],
)
def test_an_upload_that_is_not_a_finished_calibration_for_this_scanner_is_refused(
    api, pipeline, calibration, tracer, case, status, code
):
    client = api(pipeline.user)
    scanner = pipeline.scanner
    data = calibration.read_bytes()
    if case == "scan upload":
        created, _ = tus.upload_file(client, pipeline.sim["measurement"], pipeline=pipeline, hours=24.0)
    elif case == "other scanner":
        upload_id, _ = tus.upload_calibration(client, data, scanner=scanner.pk)
        scanner = Scanner.objects.create(
            site=scanner.site,
            name="Second MPI",
            manufacturer="Bruker",
            model="MPI 25/20 FF",
            base_frequency_hz=2.5e6,
            dividers=[34, 32],
            drive_amplitudes_t=[0.012, 0.012],
            gradient_t_per_m=[-1.0, -1.0, 2.0],
        )
    else:
        created = tus.create_calibration(client, length=len(data), scanner=scanner.pk, sha256=tus.sha256_hex(data))
        tus.patch(client, created["Location"], offset=0, data=data[:1000])
    if case != "other scanner":
        upload_id = created["Location"].rstrip("/").rsplit("/", 1)[-1]
    rows, events = SystemMatrix.objects.count(), AuditEvent.objects.count()

    response = _register(client, upload_id, scanner, tracer)

    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert SystemMatrix.objects.count() == rows and AuditEvent.objects.count() == events


def test_a_calibration_upload_names_its_kind_scanner_and_digest(api, pipeline):
    client = api(pipeline.user)
    wrong_kind = client.post(
        "/api/v1/uploads/",
        HTTP_UPLOAD_LENGTH="10",
        HTTP_UPLOAD_METADATA=tus.encode_metadata({"kind": "phantom", "scanner": pipeline.scanner.pk}),
        **tus.TUS,
    )
    no_digest = client.post(
        "/api/v1/uploads/",
        HTTP_UPLOAD_LENGTH="10",
        HTTP_UPLOAD_METADATA=tus.encode_metadata({"kind": "calibration", "scanner": pipeline.scanner.pk}),
        **tus.TUS,
    )
    assert wrong_kind.status_code == 400 and wrong_kind.json()["error"]["code"] == "invalid_metadata"
    assert no_digest.status_code == 400 and no_digest.json()["error"]["code"] == "missing_metadata"
    assert Upload.objects.count() == 0
