"""In a browser whose clock is Berlin's (site A's zone), "now" typed into a form is
accepted and stored as the same instant in UTC; a form submitted twice at once saves once;
a refused lot registration keeps its certificate (issue #18, items 1 to 3)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.utils import timezone

from compliance.models import Signature
from tests import factories as f
from trials.models import Consent, NanoparticleLot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def test_now_in_a_berlin_browser_is_accepted_and_stored_in_utc(browse, site_a, ready, coordinator_a):
    subject, first_consent, _batch = ready
    assert site_a.time_zone == "Europe/Berlin"
    s = browse(coordinator_a, timezone_id="Europe/Berlin")
    page = s.page
    s.go(f"/subjects/{subject.pk}/consent/")
    assert "Time in Berlin (CET/CEST)" in page.locator("#id_signed_at_help").inner_text()
    # What the person reads on the clock in the room: the browser's local time, to the minute.
    typed = page.evaluate(
        """() => { const d = new Date(); const p = n => String(n).padStart(2, "0");
        return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`; }"""
    )
    page.get_by_label("Signed at").fill(typed)
    s.shot("entry-01-consent-berlin-time")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/subjects/{subject.pk}/")
    stored = Consent.objects.exclude(pk=first_consent.pk).get().signed_at
    expected = dt.datetime.fromisoformat(typed).replace(tzinfo=BERLIN).astimezone(dt.UTC)
    assert stored == expected
    assert abs(stored - timezone.now()) < dt.timedelta(minutes=2)  # now, not an hour off
    shown = page.locator(f'time[datetime="{stored.isoformat().replace("+00:00", "Z")}"]')
    assert shown.first.inner_text().startswith(typed.replace("T", " "))
    s.shot("entry-02-subject-site-time")


def test_the_sign_form_submitted_twice_at_once_signs_once(browse, ready, coordinator_a, investigator_a):
    subject, _consent, batch = ready
    f.InjectionFactory(subject=subject, batch=batch, administered_by=coordinator_a, verified_by=investigator_a)
    s = browse(investigator_a, timezone_id="America/New_York")
    page = s.page
    s.go(f"/subjects/{subject.pk}/")
    form = page.locator(f'form[action="/subjects/{subject.pk}/sign/"]')
    form.get_by_label("Password").fill(f.PASSWORD)
    # Two submissions of the same form at once, as a double click without the button guard.
    statuses = page.evaluate(
        """async (selector) => { const form = document.querySelector(selector);
        const send = () => fetch(form.action, {method: "POST", body: new FormData(form), redirect: "manual"});
        const answers = await Promise.all([send(), send()]);
        return answers.map(r => r.type); }""",
        f'form[action="/subjects/{subject.pk}/sign/"]',
    )
    assert statuses == ["opaqueredirect", "opaqueredirect"]
    assert Signature.objects.count() == 1

    # And the page's own submit: a double click sends the form once (the button guard), and
    # a resubmission of the same token (reload after the POST) saves nothing again.
    s.go(f"/subjects/{subject.pk}/")
    form = page.locator(f'form[action="/subjects/{subject.pk}/sign/"]')
    form.get_by_label("Meaning").select_option("review")
    form.get_by_label("Password").fill(f.PASSWORD)
    with page.expect_navigation():
        form.get_by_role("button").dblclick()
    page.wait_for_load_state("networkidle")
    assert Signature.objects.count() == 2
    s.shot("entry-03-signed-once")


def test_a_refused_lot_keeps_its_certificate(browse, trial, trial_manager, tmp_path):
    certificate = tmp_path / "coa-VT-9.pdf"
    certificate.write_bytes(b"%PDF-1.4 certificate")
    s = browse(trial_manager)
    page = s.page
    s.go("/lots/new/")
    page.get_by_label("Manufacturer").fill("Magnetic Insight")
    page.get_by_label("Product").fill("VivoTrax")
    page.get_by_label("Lot number").fill("VT-9")
    page.get_by_label("Expiry date").fill("2020-06-30")
    page.get_by_label("Iron (mg Fe/mL)").fill("5.5")
    page.get_by_label("Core size (nm)").fill("4.2")
    page.get_by_label("Hydrodynamic size (nm)").fill("3.0")
    page.get_by_label("Polydispersity index").fill("0.18")
    page.get_by_label("Coating").fill("carboxydextran")
    page.get_by_label("Certificate of analysis").set_input_files(str(certificate))
    page.get_by_role("button", name="Save").click()
    assert "expired on 2020-06-30" in page.locator("#id_expiry_date_error").inner_text()
    assert "Attached: coa-VT-9.pdf" in page.locator("#id_certificate_of_analysis_help").inner_text()
    assert page.locator(".form-errors").count() == 0  # nothing above the form: each error at its field
    s.shot("entry-04-lot-refused-certificate-kept")
    page.get_by_label("Expiry date").fill(f"{timezone.localdate() + dt.timedelta(days=300):%Y-%m-%d}")
    page.get_by_role("button", name="Save").click()
    assert "cannot be smaller than the core" in page.locator("#id_hydrodynamic_size_nm_error").inner_text()
    s.shot("entry-05-lot-refused-hydrodynamic")
    page.get_by_label("Hydrodynamic size (nm)").fill("62")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/products/")
    assert NanoparticleLot.objects.get().certificate_of_analysis.read() == b"%PDF-1.4 certificate"
