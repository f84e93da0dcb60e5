"""A coordinator enrols a subject with consent and records an injection verified by a
second person, in the browser; refusals show next to their field. The trial manager
registers a lot (lots are the trial's, shared by every site)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from tests import factories as f
from trials.models import Consent, Injection, NanoparticleLot, Subject, SubjectIdentity

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _local(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")


def test_a_coordinator_enrols_a_subject_with_consent_and_records_an_injection(
    browse, trial, site_a, coordinator_a, investigator_a, trial_manager
):
    f.ConsentDocumentFactory(trial=trial, version="2.0")
    batch = f.CellBatchFactory(donor_subject=None, site=site_a, batch_code="B-ALLO-01")
    s = browse(coordinator_a)
    page = s.page
    s.shot("01-dashboard-empty")

    page.get_by_role("link", name="Enrol a subject").first.click()
    page.get_by_label("Full name").fill("Erika Mustermann")
    page.get_by_label("Date of birth").fill("1961-04-17")
    page.get_by_label("Medical record number").fill("MRN0042137")
    s.shot("02-enrol-form")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/consent/")
    subject = Subject.objects.get()
    assert SubjectIdentity.objects.filter(subject=subject).exists()

    # A signature time in the future is refused, next to its field; nothing is written.
    page.get_by_label("Signed at").fill(_local(timezone.now() + dt.timedelta(days=3)))
    page.get_by_role("button", name="Save").click()
    error = page.locator("#id_signed_at_error")
    assert "cannot be in the future" in error.inner_text()
    s.shot("03-consent-refused")
    assert Consent.objects.count() == 0
    page.get_by_label("Signed at").fill(_local(timezone.now() - dt.timedelta(minutes=5)))
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/subjects/{subject.pk}/")
    assert list(Consent.objects.get().scopes) == ["imaging", "longitudinal_imaging"]

    page.get_by_role("link", name="Record injection").click()
    page.get_by_label("Cells administered").fill("2000000")
    page.get_by_label("Volume (mL)").fill("1.5")
    page.get_by_label("Anatomical target").fill("left ventricle, anterior wall")
    page.get_by_label("Administered at").fill(_local(timezone.now() - dt.timedelta(minutes=2)))
    page.get_by_label("Verified by (second person)").select_option(label="investigator_a")
    page.get_by_label("Verifier's password").fill("not-the-password")
    page.get_by_role("button", name="Save").click()
    assert "password is wrong" in page.locator("#id_verifier_password_error").inner_text()
    s.shot("04-injection-refused")
    assert Injection.objects.count() == 0
    page.get_by_label("Verifier's password").fill(f.PASSWORD)
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/subjects/{subject.pk}/")
    injection = Injection.objects.get()
    assert (injection.batch, injection.verified_by) == (batch, investigator_a)
    chain = page.get_by_label("Chain of identity")
    assert batch.chain_of_identity_id in chain.inner_text() and batch.donation_id in chain.inner_text()
    s.shot("05-subject-timeline-after-injection")

    # A correction: the form starts from the stored value, a reason is required (shown
    # next to its field), and the audit trail keeps the old and the new value.
    page.get_by_role("link", name=f"Correct injection #{injection.pk}").click()
    page.get_by_label("Volume (mL)").fill("1.25")
    page.get_by_role("button", name="Save").click()
    assert "reason" in page.locator("#id_reason_error").inner_text()
    s.shot("05b-injection-correction-refused")
    page.get_by_label("Reason").fill("volume misread on the syringe label")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/subjects/{subject.pk}/")
    injection.refresh_from_db()
    assert str(injection.volume_ml) == "1.250"

    page.get_by_role("link", name="Subjects").first.click()
    page.get_by_label("Search subject code").fill(subject.code[-4:])
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_role("link", name=subject.code).is_visible()
    s.shot("06-subject-list")

    from tests.web.scans import scans_at

    scans_at(site_a, 3, hours=24)
    scans_at(site_a, 1, hours=2, status="failed", retryable=True, status_reason="worker lost")
    scans_at(site_a, 1, hours=48, status="reconstructing")
    page.get_by_role("link", name="Scans").first.click()
    assert page.get_by_role("link", name="View").count() == 5
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_role("link", name="View").count() == 1
    page.get_by_role("link", name="clear").click()
    s.shot("06b-scan-list")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Lots & batches").click()
    assert page.get_by_role("link", name="Register a lot").count() == 0  # the trial's, not the site's
    s = browse(trial_manager)
    page = s.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Lots & batches").click()
    page.get_by_role("link", name="Register a lot").click()
    page.get_by_label("Manufacturer").fill("Magnetic Insight")
    page.get_by_label("Product").fill("VivoTrax")
    page.get_by_label("Lot number").fill("VT-2026-17")
    page.get_by_label("Expiry date").fill((timezone.localdate() + dt.timedelta(days=20)).isoformat())
    page.get_by_label("Iron (mg Fe/mL)").fill("5.5")
    page.get_by_label("Core size (nm)").fill("4.2")
    page.get_by_label("Hydrodynamic size (nm)").fill("62")
    page.get_by_label("Polydispersity index").fill("0.18")
    page.get_by_label("Coating").fill("carboxydextran")
    page.get_by_label("Certificate of analysis").set_input_files(
        files=[{"name": "coa.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 certificate"}]
    )
    s.shot("07-lot-form")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/products/")
    lot = NanoparticleLot.objects.get(lot_number="VT-2026-17")
    assert lot.qc_status == "quarantined" and len(lot.certificate_sha256) == 64
    s.shot("08-lots-and-batches")
    s.go("/")
    assert "VT-2026-17" in page.locator("#h-lots + ul").inner_text()  # expires within 30 days
    s.shot("09-dashboard")
