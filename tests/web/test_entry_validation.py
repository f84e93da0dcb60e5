"""What the entry forms refuse, and where they say it (issue #18, item 2): a future
enrolment date and an already expired lot are refused; a lot's errors are plain words next
to their field, never a constraint name; a reason the rule requires is not labelled
optional; the dropdowns offer only what the service accepts; a refused lot registration
keeps its certificate so it need not be attached again."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from config.errors import RuleViolation
from tests import factories as f
from trials.models import CellBatch, NanoparticleLot, Subject
from trials.services import lots as lots_services
from trials.services import subjects as subjects_services

CERTIFICATE = b"%PDF-1.4 certificate of analysis, lot VT-NEW"


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_future_enrolment_date_is_refused(site_a, coordinator_a, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as refused:
        subjects_services.subject_enrol(
            actor=coordinator_a, site=site_a, enrolment_date=timezone.localdate() + dt.timedelta(days=3)
        )
    assert refused.value.code == "enrolment_date_in_future" and refused.value.field == "enrolment_date"


def _lot_data(trial, **changes) -> dict:
    data = {
        "trial": trial.pk,
        "manufacturer": "Magnetic Insight",
        "product": "VivoTrax",
        "lot_number": "VT-NEW",
        "expiry_date": f"{timezone.localdate() + dt.timedelta(days=200):%Y-%m-%d}",
        "iron_mg_per_ml": "5.5",
        "core_size_nm": "4.2",
        "hydrodynamic_size_nm": "62",
        "polydispersity_index": "0.18",
        "coating": "carboxydextran",
    }
    data.update(changes)
    return data


def _certificate():
    return SimpleUploadedFile("coa.pdf", CERTIFICATE, content_type="application/pdf")


def test_an_expired_lot_is_refused_at_registration(trial, trial_manager):
    client = _client(trial_manager)
    response = client.post(
        "/lots/new/", {**_lot_data(trial, expiry_date="2020-06-30"), "certificate_of_analysis": _certificate()}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert re.search(r'id="id_expiry_date_error"[^>]*>.*expired on 2020-06-30', html, re.S)
    assert not NanoparticleLot.objects.exists()


def test_lot_errors_are_plain_words_next_to_the_field(trial, trial_manager):
    client = _client(trial_manager)
    response = client.post(
        "/lots/new/",
        {**_lot_data(trial, hydrodynamic_size_nm="3.0"), "certificate_of_analysis": _certificate()},
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert "lot_hydrodynamic_size_at_least_core" not in html and "Constraint" not in html
    assert re.search(r'id="id_hydrodynamic_size_nm_error"[^>]*>.*cannot be smaller than the core', html, re.S)


def test_a_lot_number_registered_twice_is_refused_next_to_the_field(trial, trial_manager):
    f.NanoparticleLotFactory(trial=trial, manufacturer="Magnetic Insight", lot_number="VT-NEW")
    with pytest.raises(RuleViolation) as refused:
        lots_services.lot_register(
            actor=trial_manager,
            trial=trial,
            manufacturer="Magnetic Insight",
            product="VivoTrax",
            lot_number="VT-NEW",
            expiry_date=timezone.localdate() + dt.timedelta(days=10),
            core_size_nm=4,
            hydrodynamic_size_nm=60,
            polydispersity_index="0.2",
            coating="dextran",
            certificate_of_analysis=_certificate(),
            iron_mg_per_ml=5,
        )
    assert refused.value.code == "lot_number_taken" and refused.value.field == "lot_number"


def test_the_certificate_is_kept_across_a_refused_submission(trial, trial_manager):
    client = _client(trial_manager)
    refused = client.post(
        "/lots/new/", {**_lot_data(trial, polydispersity_index="1.5"), "certificate_of_analysis": _certificate()}
    )
    assert refused.status_code == 400
    html = refused.content.decode()
    token = re.search(r'name="certificate_token" value="([^"]+)"', html).group(1)
    assert "Attached: coa.pdf, kept from your last attempt" in html
    assert 'name="polydispersity_index" value="1.5"' in html  # what was typed is shown again

    # Another user cannot use the token.
    other = f.UserFactory(username="tm2")
    f.MembershipFactory(user=other, trial=trial, site=None, role="trial_manager")
    stolen = _client(other).post("/lots/new/", {**_lot_data(trial), "certificate_token": token})
    assert stolen.status_code == 400 and not NanoparticleLot.objects.exists()

    saved = client.post("/lots/new/", {**_lot_data(trial), "certificate_token": token})
    assert saved.status_code == 302
    lot = NanoparticleLot.objects.get()
    assert lot.certificate_sha256 == hashlib.sha256(CERTIFICATE).hexdigest()
    assert lot.certificate_of_analysis.read() == CERTIFICATE


def test_a_required_reason_is_not_labelled_optional(trial, trial_manager):
    lot = f.NanoparticleLotFactory(trial=trial, qc_status=NanoparticleLot.QcStatus.QUARANTINED)
    html = _client(trial_manager).get(f"/lots/{lot.pk}/qc/").content.decode()
    label = re.search(r'<label for="id_reason">(.*?)</label>', html, re.S).group(1)
    assert "optional" not in label


def test_the_label_form_offers_only_usable_lots(ready, coordinator_a, trial):
    _subject, _consent, released_batch = ready
    usable = f.NanoparticleLotFactory(trial=trial, lot_number="OK-1")
    f.NanoparticleLotFactory(trial=trial, lot_number="EXPIRED-1", expiry_date=dt.date(2020, 1, 31))
    f.NanoparticleLotFactory(trial=trial, lot_number="REJECTED-1", qc_status=NanoparticleLot.QcStatus.REJECTED)
    f.NanoparticleLotFactory(trial=trial, lot_number="QUARANTINED-1", qc_status=NanoparticleLot.QcStatus.QUARANTINED)
    batch = f.CellBatchFactory(
        donor_subject=released_batch.donor_subject,
        nanoparticle_lot=None,
        labelled_at=None,
        incubation_concentration_ug_fe_per_ml=None,
        iron_per_cell_pg=None,
        labelling_efficiency_percent=None,
        release_status=CellBatch.ReleaseStatus.PENDING,
    )
    html = _client(coordinator_a).get(f"/batches/{batch.pk}/label/").content.decode()
    assert usable.lot_number in html
    for refused in ("EXPIRED-1", "REJECTED-1", "QUARANTINED-1"):
        assert refused not in html


def test_the_injection_form_offers_only_this_subjects_batches(ready, coordinator_a, site_a):
    subject, _consent, own = ready
    other_donor = f.SubjectFactory(site=site_a, status=Subject.Status.ENROLLED)
    others = f.CellBatchFactory(donor_subject=other_donor, batch_code="OTHER-DONOR")
    allogeneic = f.CellBatchFactory(donor_subject=None, site=site_a, batch_code="ALLO-1")
    pending = f.CellBatchFactory(donor_subject=subject, batch_code="PENDING-1", release_status="pending")
    html = _client(coordinator_a).get(f"/subjects/{subject.pk}/injection/").content.decode()
    assert own.batch_code in html and allogeneic.batch_code in html
    assert others.batch_code not in html and pending.batch_code not in html
