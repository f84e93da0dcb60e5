"""The calibration library in the browser (issue #15 contract 1, issue #18 item 4): imaging
staff of a site register a calibration with a plain multipart form and see what was read
from it, or why it was refused; they and coordinators retire one with a reason; everyone of
the site sees each scanner's library. And the dead end said where it becomes certain: an
injection whose tracer no active calibration of the site fits gets a warning on the subject
page, the injection form and the upload page, with the way out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.models import SystemMatrix
from tests import factories as f
from trials.models import Role

pytestmark = pytest.mark.django_db

NAME = "Recalibration 2026-11 (delta 0.05 mol/L)"


def _library_files(settings) -> set[Path]:
    root = Path(settings.MEDIA_ROOT) / "imaging" / "system_matrices"
    return set(root.iterdir()) if root.exists() else set()


def _form(pipeline, path, **extra):
    return {
        "scanner": pipeline.scanner.pk,
        "name": NAME,
        "tracer_product": pipeline.batch.nanoparticle_lot.product,
        "nanoparticle_lot": "",
        "file": SimpleUploadedFile(Path(path).name, Path(path).read_bytes(), content_type="application/x-hdf5"),
        **extra,
    }


def test_imaging_staff_register_a_calibration_with_the_form(browser_client, pipeline, simulate, settings):
    client = browser_client(pipeline.user)
    calibration = simulate(2)["system_matrix"]
    assert client.get(reverse("web:calibration-register")).status_code == 200

    response = client.post(reverse("web:calibration-register"), _form(pipeline, calibration), follow=True)

    assert response.status_code == 200
    sm = SystemMatrix.objects.get(name=NAME)
    assert (sm.scanner, sm.registered_by, sm.active) == (pipeline.scanner, pipeline.user, True)
    page = response.content.decode()
    # The validation result: what was read from the file, on the library page it lands on.
    assert f"Calibration #{sm.pk} {NAME} registered" in page and "valid 12×12×1 grid" in page
    assert f'id="calibration-{sm.pk}"' in page and f"{sm.frequencies_count:,}" in page
    assert (Path(settings.MEDIA_ROOT) / sm.file).read_bytes() == Path(calibration).read_bytes()
    event = AuditEvent.objects.get(action=AuditAction.SYSTEM_MATRIX_REGISTERED, object_id=str(sm.pk))
    assert event.actor_username == pipeline.user.username


def test_a_refused_file_is_shown_next_to_the_field_and_nothing_is_kept(browser_client, pipeline, settings):
    client = browser_client(pipeline.user)
    rows, events, files = SystemMatrix.objects.count(), AuditEvent.objects.count(), _library_files(settings)

    response = client.post(reverse("web:calibration-register"), _form(pipeline, pipeline.sim["measurement"]))

    assert response.status_code == 400
    assert response.context["form"].errors["file"] == [
        "The file is a measurement MDF, not a calibration (a system matrix needs /calibration)."
    ]
    assert SystemMatrix.objects.count() == rows and AuditEvent.objects.count() == events
    assert _library_files(settings) == files


def test_a_file_over_the_in_memory_limit_is_streamed_to_disk_and_registered(
    browser_client, pipeline, simulate, settings
):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # the calibration (hundreds of kB) goes to a temporary file
    client = browser_client(pipeline.user)

    response = client.post(reverse("web:calibration-register"), _form(pipeline, simulate(2)["system_matrix"]))

    assert response.status_code == 302, response.context["form"].errors if response.context else response
    assert SystemMatrix.objects.filter(name=NAME).exists()


@pytest.mark.parametrize("who", ["coordinator_a", "investigator_a", "monitor", "sponsor"])
def test_only_imaging_staff_get_the_register_form(browser_client, pipeline, simulate, request, who):
    client = browser_client(request.getfixturevalue(who))
    events = AuditEvent.objects.count()

    get = client.get(reverse("web:calibration-register"))
    post = client.post(reverse("web:calibration-register"), _form(pipeline, simulate(2)["system_matrix"]))

    assert get.status_code == 404 and post.status_code == 404
    assert SystemMatrix.objects.count() == 1 and AuditEvent.objects.count() == events
    if who != "sponsor":
        assert "Register a calibration" not in client.get(reverse("web:calibrations")).content.decode()


def test_the_library_lists_each_scanners_calibrations(browser_client, pipeline, coordinator_a):
    sm = pipeline.system_matrix
    page = browser_client(coordinator_a).get(reverse("web:calibrations")).content.decode()
    assert pipeline.scanner.name in page and sm.name in page
    assert "12×12×1" in page and sm.tracer_product in page and "active" in page
    assert f"{sm.snr_summary['median']:,.1f}" in page
    assert reverse("web:calibration-retire", args=[sm.pk]) in page  # a coordinator may retire
    assert reverse("web:calibration-register") not in page  # but not register


def test_another_sites_library_is_not_shown(browser_client, pipeline, coordinator_b):
    client = browser_client(coordinator_b)
    page = client.get(reverse("web:calibrations")).content.decode()
    assert pipeline.scanner.name not in page
    assert client.get(reverse("web:calibration-retire", args=[pipeline.system_matrix.pk])).status_code == 404


def test_imaging_staff_retire_a_calibration_with_a_reason(browser_client, pipeline):
    client = browser_client(pipeline.user)
    url = reverse("web:calibration-retire", args=[pipeline.system_matrix.pk])
    assert client.post(url, {"reason": ""}).status_code == 400

    response = client.post(url, {"reason": "superseded by the recalibration after the coil service"}, follow=True)

    assert response.status_code == 200
    sm = SystemMatrix.objects.get(pk=pipeline.system_matrix.pk)
    assert sm.active is False and "retired" in response.content.decode()
    event = AuditEvent.objects.get(action=AuditAction.SYSTEM_MATRIX_RETIRED)
    assert event.reason == "superseded by the recalibration after the coil service"


def test_a_monitor_cannot_retire(browser_client, pipeline, monitor):
    url = reverse("web:calibration-retire", args=[pipeline.system_matrix.pk])
    assert browser_client(monitor).post(url, {"reason": "superseded by the recalibration"}).status_code == 404
    assert SystemMatrix.objects.get(pk=pipeline.system_matrix.pk).active is True


# --------------------------------------------------------------------------- the dead end


WARNING = "No active calibration for tracer"


@pytest.fixture
def new_tracer(pipeline, coordinator_a, investigator_a):
    """A second subject's batch labelled with a tracer no calibration at site A fits."""
    lot = f.NanoparticleLotFactory(trial=pipeline.subject.trial, product="Perimag", lot_number="PM-2026-01")
    subject = f.SubjectFactory(site=pipeline.subject.site, code="MPI-CT-T01-A-0002")
    f.ConsentFactory(subject=subject, obtained_by=coordinator_a)
    batch = f.CellBatchFactory(donor_subject=subject, nanoparticle_lot=lot)
    return subject, batch, lot


def test_the_subject_page_warns_when_the_injections_tracer_has_no_calibration(
    browser_client, pipeline, new_tracer, coordinator_a, investigator_a
):
    subject, batch, lot = new_tracer
    f.InjectionFactory(subject=subject, batch=batch, administered_by=coordinator_a, verified_by=investigator_a)
    client = browser_client(coordinator_a)

    warned = client.get(reverse("web:subject", args=[subject.pk])).content.decode()
    fine = client.get(reverse("web:subject", args=[pipeline.subject.pk])).content.decode()

    assert f"{WARNING} <strong>Perimag</strong> (lot PM-2026-01) on the scanners of site A" in warned
    assert "scan uploads for injections labelled with it will be refused" in warned
    assert f'href="{reverse("web:calibration-register")}"' in warned
    assert WARNING not in fine  # the pipeline's tracer has its calibration


def test_the_warning_goes_once_a_calibration_for_the_tracer_is_registered(
    browser_client, pipeline, new_tracer, coordinator_a, investigator_a, simulate
):
    subject, batch, lot = new_tracer
    f.InjectionFactory(subject=subject, batch=batch, administered_by=coordinator_a, verified_by=investigator_a)
    form = _form(pipeline, simulate(2)["system_matrix"], tracer_product="Perimag")
    assert browser_client(pipeline.user).post(reverse("web:calibration-register"), form).status_code == 302

    page = browser_client(coordinator_a).get(reverse("web:subject", args=[subject.pk])).content.decode()

    assert WARNING not in page


def test_the_injection_form_warns_before_and_after_the_injection_is_recorded(
    browser_client, pipeline, new_tracer, coordinator_a, investigator_a
):
    subject, batch, lot = new_tracer
    client = browser_client(coordinator_a)
    url = reverse("web:injection-record", args=[subject.pk])

    before = client.get(url).content.decode()
    response = client.post(
        url,
        {
            "batch": batch.pk,
            "administered_cells": "1000000",
            "volume_ml": "0.5",
            "route": "intramyocardial",
            "anatomical_target": "left ventricle",
            "administered_at": timezone.localtime(timezone.now() - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "administered_by": coordinator_a.pk,
            "verified_by": investigator_a.pk,
            "verifier_password": f.PASSWORD,
        },
        follow=True,
    )

    assert f"{WARNING} <strong>Perimag</strong>" in before
    assert response.status_code == 200, response.content.decode()[:2000]
    messages = [str(m) for m in response.context["messages"]]
    assert any(m.startswith(f"{WARNING} Perimag (lot PM-2026-01)") for m in messages), messages
    assert subject.injections.count() == 1


def test_the_upload_page_warns_imaging_staff(browser_client, pipeline, new_tracer, coordinator_a, investigator_a):
    subject, batch, lot = new_tracer
    f.InjectionFactory(subject=subject, batch=batch, administered_by=coordinator_a, verified_by=investigator_a)
    page = browser_client(pipeline.user).get(reverse("web:scan-upload", args=[subject.pk])).content.decode()
    assert f"{WARNING} <strong>Perimag</strong>" in page


def test_a_site_without_scanners_is_a_dead_end_too(browser_client, site_b, coordinator_b, trial):
    investigator = f.UserFactory(username="investigator_b")
    f.MembershipFactory(user=investigator, site=site_b, trial=trial, role=Role.INVESTIGATOR)
    subject = f.SubjectFactory(site=site_b, code="MPI-CT-T01-B-0001")
    f.ConsentFactory(subject=subject, obtained_by=coordinator_b)
    batch = f.CellBatchFactory(donor_subject=subject)
    f.InjectionFactory(subject=subject, batch=batch, administered_by=coordinator_b, verified_by=investigator)

    page = browser_client(coordinator_b).get(reverse("web:subject", args=[subject.pk])).content.decode()

    assert f"{WARNING} <strong>{batch.nanoparticle_lot.product}</strong>" in page and "site B" in page


def test_labelling_a_batch_with_a_tracer_without_calibration_warns_at_once(browser_client, pipeline, coordinator_a):
    """The first step where the dead end is certain: the tracer and the site are both known."""
    lot = f.NanoparticleLotFactory(trial=pipeline.subject.trial, product="Perimag", lot_number="PM-2026-02")
    batch = f.CellBatchFactory(
        donor_subject=None, site=pipeline.subject.site, unlabelled=True, manufactured_at=f.days_ago(5)
    )
    when = f.days_ago(4).strftime("%Y-%m-%dT%H:%M")  # a day after manufacture, in any time zone

    response = browser_client(coordinator_a).post(
        reverse("web:batch-label", args=[batch.pk]),
        {
            "nanoparticle_lot": lot.pk,
            "incubation_concentration_ug_fe_per_ml": "50",
            "iron_per_cell_pg": "11.2",
            "labelling_efficiency_percent": "96.5",
            "labelled_at": when,
            "reason": "labelling done",
        },
        follow=True,
    )

    batch.refresh_from_db()
    assert batch.nanoparticle_lot == lot
    messages = [str(m) for m in response.context["messages"]]
    assert any(m.startswith(f"{WARNING} Perimag (lot PM-2026-02) on the scanners of site A") for m in messages)
