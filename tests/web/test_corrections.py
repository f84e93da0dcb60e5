"""Correction forms and the status change: each calls its service with a required reason,
only the fields the person changed go to it (the audit event keeps old and new values),
refusals show next to their field and write nothing, and other sites get 404."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests import factories as f
from tests.conftest import last_event


def _local(value: dt.datetime) -> str:
    # Typed on the site's clock (site A: Europe/Berlin), as the form says (trials.site_time).
    return value.astimezone(zoneinfo.ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%dT%H:%M")


@pytest.fixture
def injection(ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    return f.InjectionFactory(subject=subject, batch=batch, administered_by=coordinator_a, verified_by=investigator_a)


def _form_data(response) -> dict:
    """What the browser would post back unchanged: the form's initial values, as rendered."""
    form = response.context["form"]
    data: dict[str, object] = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(value, (list, tuple)):
            data[name] = list(value)
        elif value is None:
            data[name] = ""
        else:
            data[name] = (
                field.widget.format_value(value)
                if hasattr(field.widget, "format_value") and isinstance(value, (dt.date, dt.datetime))
                else getattr(value, "pk", value)
            )
    return data


def _urls(subject, consent, batch, injection):
    return [
        f"/subjects/{subject.pk}/edit/",
        f"/subjects/{subject.pk}/status/",
        f"/consents/{consent.pk}/edit/",
        f"/injections/{injection.pk}/edit/",
        f"/lots/{batch.nanoparticle_lot_id}/edit/",
        f"/batches/{batch.pk}/edit/",
    ]


def test_it_renders_every_correction_form_for_the_coordinator(
    browser_client, coordinator_a, trial_manager, ready, injection
):
    subject, consent, batch = ready
    # Lots are the trial's: the trial manager corrects them, not a site coordinator.
    lot_url = f"/lots/{batch.nanoparticle_lot_id}/edit/"
    client = browser_client(coordinator_a)
    for url in _urls(subject, consent, batch, injection):
        page = client.get(url)
        assert page.status_code == (404 if url == lot_url else 200), url
        if url != lot_url:
            assert b'for="id_reason"' in page.content, url
    timeline = client.get(f"/subjects/{subject.pk}/").content.decode()
    for url in _urls(subject, consent, batch, injection)[:4]:
        assert f'href="{url}"' in timeline, url
    products = client.get("/products/").content.decode()
    assert f'href="{lot_url}"' not in products and f'href="/batches/{batch.pk}/edit/"' in products
    manager = browser_client(trial_manager)
    assert b'for="id_reason"' in manager.get(lot_url).content
    assert f'href="{lot_url}"' in manager.get("/products/").content.decode()


def test_it_answers_404_to_another_site(browser_client, coordinator_b, ready, injection, nothing_written):
    subject, consent, batch = ready
    client = browser_client(coordinator_b)
    # Lots are the trial's (every site uses them), so only the site-owned records are here.
    urls = [u for u in _urls(subject, consent, batch, injection) if not u.startswith("/lots/")]
    with nothing_written():
        for url in urls:
            assert client.get(url).status_code == 404, url
            assert (
                client.post(url, {"reason": "typo on the CRF, source checked", "status": "withdrawn"}).status_code
                == 404
            ), url


def test_it_corrects_the_enrolment_date_with_old_and_new_in_the_audit_trail(browser_client, coordinator_a, ready):
    subject, _, _ = ready
    old = subject.enrolment_date
    new = old - dt.timedelta(days=3)
    response = browser_client(coordinator_a).post(
        f"/subjects/{subject.pk}/edit/", {"enrolment_date": new.isoformat(), "reason": "transcription error"}
    )
    assert response.status_code == 302
    subject.refresh_from_db()
    assert subject.enrolment_date == new
    event = AuditEvent.objects.filter(action=AuditAction.SUBJECT_UPDATED).get()
    assert event.changes == {"enrolment_date": [old.isoformat(), new.isoformat()]}
    assert event.reason == "transcription error"


def test_it_refuses_a_correction_without_a_reason_next_to_the_field(
    browser_client, coordinator_a, ready, nothing_written
):
    subject, _, _ = ready
    client = browser_client(coordinator_a)
    with nothing_written():
        response = client.post(
            f"/subjects/{subject.pk}/edit/",
            {"enrolment_date": (subject.enrolment_date - dt.timedelta(days=1)).isoformat(), "reason": " "},
        )
    assert response.status_code == 400
    assert response.context["form"].errors["reason"]
    assert b'id="id_reason_error"' in response.content


def test_it_shows_the_service_refusal_next_to_the_field(browser_client, coordinator_a, ready, nothing_written):
    subject, _, _ = ready
    client = browser_client(coordinator_a)
    with nothing_written():
        response = client.post(
            f"/subjects/{subject.pk}/edit/",
            {
                "enrolment_date": (timezone.localdate() + dt.timedelta(days=5)).isoformat(),
                "reason": "typo on the CRF, source checked",
            },
        )
    assert response.status_code == 400
    assert response.context["form"].errors["enrolment_date"] == ["The enrolment date cannot be in the future."]
    assert b'id="id_enrolment_date_error"' in response.content


def test_it_sends_only_the_changed_fields_of_an_injection(browser_client, coordinator_a, injection):
    client = browser_client(coordinator_a)
    data = _form_data(client.get(f"/injections/{injection.pk}/edit/"))
    data.update(volume_ml="1.750", reason="volume misread on the syringe")
    response = client.post(f"/injections/{injection.pk}/edit/", data)
    assert response.status_code == 302, response.context["form"].errors
    injection.refresh_from_db()
    assert injection.volume_ml == Decimal("1.750")
    event = last_event()
    assert event.action == AuditAction.INJECTION_UPDATED and set(event.changes) == {"volume_ml"}


def test_it_corrects_the_planned_duration_of_an_injection(browser_client, coordinator_a, injection):
    client = browser_client(coordinator_a)
    data = _form_data(client.get(f"/injections/{injection.pk}/edit/"))
    assert data["planned_duration_s"] == ""  # not given: the platform default
    data.update(planned_duration_s="0", reason="a bolus per the protocol, not recorded")
    response = client.post(f"/injections/{injection.pk}/edit/", data)
    assert response.status_code == 302, response.context["form"].errors
    injection.refresh_from_db()
    assert injection.planned_duration_s == Decimal("0")
    event = last_event()
    assert event.action == AuditAction.INJECTION_UPDATED
    assert event.changes == {"planned_duration_s": [None, "0.000"]}


def test_it_refuses_a_negative_planned_duration_in_a_correction(
    browser_client, coordinator_a, injection, nothing_written
):
    client = browser_client(coordinator_a)
    data = _form_data(client.get(f"/injections/{injection.pk}/edit/"))
    with nothing_written():
        response = client.post(
            f"/injections/{injection.pk}/edit/", {**data, "planned_duration_s": "-1", "reason": "typo on the CRF"}
        )
    assert response.status_code == 400
    assert "cannot be negative" in response.context["form"].errors["planned_duration_s"][0]


def test_it_says_so_when_a_correction_changes_nothing(browser_client, coordinator_a, injection, nothing_written):
    client = browser_client(coordinator_a)
    data = _form_data(client.get(f"/injections/{injection.pk}/edit/"))
    with nothing_written():
        response = client.post(f"/injections/{injection.pk}/edit/", {**data, "reason": "checking"})
    assert response.status_code == 400
    assert "changes nothing" in " ".join(response.context["form"].non_field_errors())


def test_it_refuses_an_injection_correction_verified_by_the_administrator(
    browser_client, coordinator_a, injection, nothing_written
):
    client = browser_client(coordinator_a)
    data = _form_data(client.get(f"/injections/{injection.pk}/edit/"))
    with nothing_written():
        response = client.post(
            f"/injections/{injection.pk}/edit/", {**data, "verified_by": coordinator_a.pk, "reason": "wrong verifier"}
        )
    assert response.context["form"].errors["verified_by"] == [
        "The verifier must be someone other than the administrator."
    ]


def test_it_corrects_a_lot_and_recomputes_the_other_concentration(browser_client, trial_manager, ready):
    lot = ready[2].nanoparticle_lot
    client = browser_client(trial_manager)
    data = _form_data(client.get(f"/lots/{lot.pk}/edit/"))
    response = client.post(f"/lots/{lot.pk}/edit/", {**data, "iron_mg_per_ml": "5.6000", "reason": "CoA reread"})
    assert response.status_code == 302, response.context["form"].errors
    lot.refresh_from_db()
    assert lot.iron_mg_per_ml == Decimal("5.6") and set(last_event().changes) == {"iron_mg_per_ml", "iron_mmol_per_l"}


def test_it_refuses_a_lot_correction_next_to_the_field(browser_client, trial_manager, ready, nothing_written):
    lot = ready[2].nanoparticle_lot
    client = browser_client(trial_manager)
    data = _form_data(client.get(f"/lots/{lot.pk}/edit/"))
    with nothing_written():
        response = client.post(
            f"/lots/{lot.pk}/edit/", {**data, "hydrodynamic_size_nm": "2", "reason": "typo on the CRF, source checked"}
        )
    assert "cannot be smaller than the core" in response.context["form"].errors["hydrodynamic_size_nm"][0]


def test_it_refuses_a_batch_count_below_what_was_injected(
    browser_client, coordinator_a, ready, injection, nothing_written
):
    batch = ready[2]
    client = browser_client(coordinator_a)
    data = _form_data(client.get(f"/batches/{batch.pk}/edit/"))
    assert "labelled_at" not in data  # released: the labelling is not corrected here
    with nothing_written():
        response = client.post(
            f"/batches/{batch.pk}/edit/", {**data, "cell_count": "1000", "reason": "typo on the CRF, source checked"}
        )
    assert "cannot be corrected to" in response.context["form"].errors["cell_count"][0]
    response = client.post(
        f"/batches/{batch.pk}/edit/",
        {**data, "viability_percent": "91.00", "reason": "typo on the CRF, source checked"},
    )
    assert response.status_code == 302
    batch.refresh_from_db()
    assert batch.viability_percent == Decimal("91.00")


def test_it_corrects_a_consent_signature_time(browser_client, coordinator_a, ready):
    subject, consent, _ = ready
    client = browser_client(coordinator_a)
    data = _form_data(client.get(f"/consents/{consent.pk}/edit/"))
    new = consent.signed_at - dt.timedelta(days=1)
    response = client.post(f"/consents/{consent.pk}/edit/", {**data, "signed_at": _local(new), "reason": "date typo"})
    assert response.status_code == 302, response.context["form"].errors
    consent.refresh_from_db()
    assert consent.signed_at == new.replace(second=0, microsecond=0)
    assert last_event().action == AuditAction.CONSENT_UPDATED


def test_it_changes_the_subject_status_with_a_reason(browser_client, coordinator_a, ready, nothing_written):
    subject, _, _ = ready
    client = browser_client(coordinator_a)
    page = client.get(f"/subjects/{subject.pk}/status/")
    assert subject.status not in [value for value, _ in page.context["form"].fields["status"].choices]
    with nothing_written():
        refused = client.post(f"/subjects/{subject.pk}/status/", {"status": "withdrawn", "reason": ""})
    assert refused.status_code == 400 and b'id="id_reason_error"' in refused.content
    assert (
        client.post(
            f"/subjects/{subject.pk}/status/", {"status": "withdrawn", "reason": "moved abroad", "confirm": "on"}
        ).status_code
        == 302
    )
    subject.refresh_from_db()
    assert subject.status == "withdrawn"
    event = last_event()
    assert event.action == AuditAction.SUBJECT_STATUS_CHANGED and event.reason == "moved abroad"
    assert f'href="/subjects/{subject.pk}/status/"' not in client.get(f"/subjects/{subject.pk}/").content.decode()


def test_it_does_not_offer_corrections_to_a_monitor(browser_client, monitor, ready, nothing_written):
    # The monitor reads the subject trial-wide but may correct nothing: no form, 404 (see
    # test_write_forms_by_role.py for every form and role).
    subject, _, _ = ready
    client = browser_client(monitor)
    assert client.get(f"/subjects/{subject.pk}/edit/").status_code == 404
    with nothing_written():
        response = client.post(
            f"/subjects/{subject.pk}/edit/",
            {
                "enrolment_date": (subject.enrolment_date - dt.timedelta(days=1)).isoformat(),
                "reason": "typo on the CRF, source checked",
            },
        )
    assert response.status_code == 404
