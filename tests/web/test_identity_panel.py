"""The identity panel of the subject page (issue #18, item 5): PHI roles reveal a
subject's identity on an explicit action, each reading audited (refusals too), never
cached; a site's coordinator or investigator corrects it with a reason."""

from __future__ import annotations

import datetime as dt

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Signature
from compliance.signatures import signature_apply
from tests import factories as f
from tests.conftest import last_event
from trials.models import SubjectIdentity

NAME, MRN, DOB = "Erika Mustermann", "MRN0042137", dt.date(1961, 4, 17)


@pytest.fixture
def subject(site_a):
    subject = f.SubjectFactory(site=site_a)
    f.SubjectIdentityFactory(subject=subject, full_name=NAME, medical_record_number=MRN, date_of_birth=DOB)
    return subject


def _url(subject):
    return f"/subjects/{subject.pk}/identity/"


def _events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


@pytest.mark.parametrize("who", ["coordinator_a", "investigator_a", "monitor"])
def test_a_phi_role_sees_the_panel_but_not_the_values_until_asked(request, browser_client, subject, who):
    client = browser_client(request.getfixturevalue(who))
    html = client.get(f"/subjects/{subject.pk}/").content.decode()
    assert "Show identity" in html and f'action="{_url(subject)}"' in html
    assert NAME not in html and MRN not in html
    assert not _events(AuditAction.IDENTITY_READ)  # opening the subject page reads no PHI


@pytest.mark.parametrize("who", ["imaging_a", "auditor", "coordinator_b", "investigator_b"])
def test_a_role_without_the_right_sees_no_panel(request, browser_client, subject, who):
    reader = request.getfixturevalue(who)
    page = browser_client(reader).get(f"/subjects/{subject.pk}/")
    if page.status_code == 404:  # another site's staff do not see the subject at all
        assert who.endswith("_b")
        return
    html = page.content.decode()
    assert "Show identity" not in html and _url(subject) not in html and NAME not in html


@pytest.mark.parametrize("who", ["coordinator_a", "investigator_a", "monitor"])
def test_showing_the_identity_is_audited_and_never_cached(request, browser_client, subject, who):
    reader = request.getfixturevalue(who)
    response = browser_client(reader).post(_url(subject), {"action": "show"}, HTTP_X_REQUEST_ID="req-id-1")
    assert response.status_code == 200
    html = response.content.decode()
    assert NAME in html and MRN in html and "1961-04-17" in html
    assert "no-store" in response["Cache-Control"]
    [event] = _events(AuditAction.IDENTITY_READ)
    assert (event.actor, event.subject_id, event.site_id, event.request_id) == (
        reader,
        subject.pk,
        subject.site_id,
        "req-id-1",
    )
    assert event.occurred_at is not None
    # The correction form only for the site's clinical staff; a monitor reads only.
    assert ('name="reason"' in html) is (who != "monitor")
    assert "(optional)" not in html  # a correction needs its reason, and the form says so


def test_the_identity_is_read_only_on_a_post(browser_client, subject, coordinator_a):
    # A link preview, a prefetch or a reload must never read PHI: GET is not allowed.
    assert browser_client(coordinator_a).get(_url(subject)).status_code == 405
    assert not AuditEvent.objects.filter(action__in=[AuditAction.IDENTITY_READ]).exists()


@pytest.mark.parametrize("who", ["imaging_a", "auditor"])
def test_a_forged_request_by_a_role_without_the_right_is_refused_and_audited(request, browser_client, subject, who):
    reader = request.getfixturevalue(who)
    response = browser_client(reader).post(_url(subject), {"action": "show"})
    assert response.status_code == 404
    assert NAME not in response.content.decode()
    [event] = _events(AuditAction.IDENTITY_READ_REFUSED)
    assert (event.actor, event.subject_id, event.changes["why"]) == (reader, subject.pk, "role may not read PHI")
    assert not _events(AuditAction.IDENTITY_READ)


@pytest.mark.parametrize("who", ["sponsor", "coordinator_b"])
def test_a_reader_who_cannot_see_the_subject_gets_404_and_the_attempt_is_audited(request, browser_client, subject, who):
    reader = request.getfixturevalue(who)
    response = browser_client(reader).post(_url(subject), {"action": "show"})
    assert response.status_code == 404
    [event] = _events(AuditAction.IDENTITY_READ_REFUSED)
    assert (event.actor, event.object_id, event.changes["why"]) == (
        reader,
        str(subject.pk),
        "not visible to the reader",
    )
    assert event.subject_id is None  # nothing of the subject's scope told to someone who cannot see it
    assert NAME not in str(event.changes)


def test_a_coordinator_corrects_the_identity_with_a_reason(browser_client, subject, coordinator_a, investigator_a):
    signature = signature_apply(signer=investigator_a, password=f.PASSWORD, obj=subject, meaning="approval")
    client = browser_client(coordinator_a)
    data = {
        "action": "correct",
        "full_name": "Erika Musterfrau",
        "date_of_birth": "1961-04-17",
        "medical_record_number": MRN,
        "reason": "surname misspelt at enrolment, checked against the ID card",
    }
    response = client.post(_url(subject), data)
    assert response.status_code == 302 and response["Location"] == f"/subjects/{subject.pk}/"
    assert SubjectIdentity.objects.get(subject=subject).full_name == "Erika Musterfrau"
    event = last_event()
    assert (event.action, event.actor, event.subject_id, event.reason) == (
        AuditAction.IDENTITY_UPDATED,
        coordinator_a,
        subject.pk,
        "surname misspelt at enrolment, checked against the ID card",
    )
    # Old and new value of the changed field only, as keyed fingerprints: the trail holds no PHI.
    assert set(event.changes) == {"full_name"}
    old, new = event.changes["full_name"]
    assert old.startswith("hmac-sha256:") and new.startswith("hmac-sha256:") and old != new
    assert "Erika" not in str(event.changes)
    # Identity is not part of the signed visit: its signature stands.
    assert Signature.objects.get(pk=signature.pk).valid


def test_a_correction_without_a_reason_is_refused_next_to_the_field(
    browser_client, subject, coordinator_a, nothing_written
):
    data = {"action": "correct", "full_name": "Erika Musterfrau", "date_of_birth": "1961-04-17"}
    data["medical_record_number"] = MRN
    client = browser_client(coordinator_a)  # signing in is on the trail: before the count
    with nothing_written():
        response = client.post(_url(subject), data)
    assert response.status_code == 400
    assert "no-store" in response["Cache-Control"]
    assert response.context["form"].errors["reason"]
    assert SubjectIdentity.objects.get(subject=subject).full_name == NAME


def test_a_correction_that_changes_nothing_is_refused(browser_client, subject, coordinator_a, nothing_written):
    data = {"action": "correct", "full_name": NAME, "date_of_birth": "1961-04-17", "medical_record_number": MRN}
    client = browser_client(coordinator_a)
    with nothing_written():
        response = client.post(_url(subject), {**data, "reason": "checked against the ID"})
    assert response.status_code == 400
    assert "changes nothing" in response.content.decode()


def test_a_monitor_cannot_correct(browser_client, subject, monitor, nothing_written):
    data = {"action": "correct", "full_name": "X Y", "date_of_birth": "1961-04-17", "medical_record_number": MRN}
    client = browser_client(monitor)
    with nothing_written():
        response = client.post(_url(subject), {**data, "reason": "monitor would change it"})
    assert response.status_code == 404


def test_an_identity_not_recorded_at_enrolment_is_recorded_from_the_panel(browser_client, site_a, coordinator_a):
    subject = f.SubjectFactory(site=site_a)
    client = browser_client(coordinator_a)
    page = client.post(_url(subject), {"action": "show"})
    assert page.status_code == 200 and "No identity is recorded" in page.content.decode()
    assert "Record the identity" in page.content.decode()
    response = client.post(
        _url(subject),
        {"action": "correct", "full_name": NAME, "date_of_birth": "1961-04-17", "medical_record_number": MRN},
    )
    assert response.status_code == 302
    assert last_event().action == AuditAction.IDENTITY_CREATED
