"""POST /live-sessions/ (imaging staff of the injection's site, imaging consent in force)
and POST /live-sessions/{id}/start/ (the stream header: validated, the system matrix
checked or matched, the recording created). Each refusal: its code, nothing written
(a system-matrix mismatch writes exactly its alert)."""

from __future__ import annotations

import copy

import pytest
from django.conf import settings

from audit.actions import AuditAction
from audit.models import AuditEvent
from live.models import LiveAlert, LiveSession
from recon.mdf import MDFFile
from tests.conftest import _member, last_event
from tests.imaging.factories import ScannerFactory, SystemMatrixFactory
from tests.live.stream import URL, create
from trials.models import Role
from trials.services.consent import consent_withdraw

pytestmark = pytest.mark.usefixtures("memory_feed")


def test_imaging_staff_open_a_session(api, pipeline):
    body = create(api(pipeline.user), pipeline.injection.pk)
    assert body["status"] == "open"
    assert body["injection"] == pipeline.injection.pk and body["subject"] == pipeline.subject.pk
    assert body["scanner"] == pipeline.scanner.pk and body["system_matrix"] is None
    assert (body["frames_received"], body["frames_recorded"], body["next_frame"], body["scan"]) == (0, 0, 0, None)
    event = last_event()
    assert event.action == AuditAction.LIVE_SESSION_CREATED and event.object_id == str(body["id"])
    assert LiveSession.objects.get().created_by == pipeline.user


def test_a_session_takes_the_scanner_of_its_system_matrix(api, pipeline, site_a):
    ScannerFactory(site=site_a)  # two scanners now: the system matrix says which
    body = create(api(pipeline.user), pipeline.injection.pk, system_matrix=pipeline.system_matrix.pk)
    assert body["scanner"] == pipeline.scanner.pk and body["system_matrix"] == pipeline.system_matrix.pk


def test_several_scanners_and_none_named_is_refused(api, pipeline, site_a, nothing_changed):
    ScannerFactory(site=site_a)
    with nothing_changed():
        response = api(pipeline.user).post(URL, {"injection": pipeline.injection.pk}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "scanner_required"


def test_no_session_without_imaging_consent_in_force(api, pipeline, coordinator_a):
    consent_withdraw(actor=coordinator_a, consent=pipeline.consent, scopes=["imaging"], reason="no more imaging")
    before = AuditEvent.objects.count()
    response = api(pipeline.user).post(URL, {"injection": pipeline.injection.pk}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "consent_not_in_force"
    assert not LiveSession.objects.exists() and AuditEvent.objects.count() == before


def test_another_sites_injection_is_not_found(api, pipeline, site_b, nothing_changed):
    imaging_b = _member("imaging_b", Role.IMAGING_STAFF, site=site_b)
    with nothing_changed():
        response = api(imaging_b).post(URL, {"injection": pipeline.injection.pk}, format="json")
    assert response.status_code == 404 and not LiveSession.objects.exists()


def test_only_imaging_staff_stream(api, pipeline, coordinator_a, nothing_changed):
    with nothing_changed():
        response = api(coordinator_a).post(URL, {"injection": pipeline.injection.pk}, format="json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


# --------------------------------------------------------------------------- start


def _start(client, session_id, header):
    return client.post(f"{URL}{session_id}/start/", header, format="json")


def test_a_valid_header_starts_the_stream_and_creates_the_recording(api, pipeline, stream):
    client = api(pipeline.user)
    session = create(client, pipeline.injection.pk)
    response = _start(client, session["id"], stream.header)
    assert response.status_code == 200, response.content
    body = response.json()
    j, c, v = stream.frames.shape[1:]
    assert body["status"] == "streaming" and body["frame_shape"] == [j, c, v] and body["dtype"] == "float32"
    assert body["system_matrix"] == pipeline.system_matrix.pk  # matched as for uploads
    row = LiveSession.objects.get()
    # 2D fast preset: dividers 51/48, lcm 816 samples at 2.5 MHz, 1 average, 1 period.
    assert row.frame_duration_s == pytest.approx(816 / 2.5e6, rel=1e-12)
    assert last_event().action == AuditAction.LIVE_SESSION_STARTED
    with MDFFile(settings.MEDIA_ROOT / row.recording) as f:
        assert (f.num_frames, f.num_periods, f.num_receive_channels, f.num_sampling_points) == (0, j, c, v)
    # The same header again changes nothing; another one is refused.
    events = AuditEvent.objects.count()
    assert _start(client, session["id"], stream.header).status_code == 200
    changed = copy.deepcopy(stream.header)
    changed["started_at"] += 1
    again = _start(client, session["id"], changed)
    assert again.status_code == 409 and again.json()["error"]["code"] == "stream_header_changed"
    assert AuditEvent.objects.count() == events


def _bad(header, change):
    header = copy.deepcopy(header)
    change(header)
    return header


BAD_HEADERS = {
    "bad_stream_header": lambda h: h.update(started_at="yesterday"),
    "unsupported_protocol": lambda h: h.update(protocol="mpi-live/2"),
    "unsupported_dtype": lambda h: h.update(dtype="uint8"),
    "field_not_allowed": lambda h: h["fields"].update({"/measurement/data": [1, 2]}),
    "too_many_fields": lambda h: h["fields"].update({f"/experiment/x{i}": i for i in range(200)}),
    "field_too_large": lambda h: h["fields"].update({"/acquisition/extra": list(range(4097))}),
    "required_field_missing": lambda h: h["fields"].pop("/acquisition/receiver/numChannels"),
    "invalid_field_value": lambda h: h["fields"].update({"/acquisition/receiver/numSamplingPoints": -816}),
    "frame_too_large": lambda h: h["fields"].update({"/acquisition/numPeriodsPerFrame": 2**16 + 1}),
}


@pytest.mark.parametrize("code", sorted(BAD_HEADERS))
def test_each_bad_header_is_refused_with_its_code(api, pipeline, stream, code, nothing_changed):
    client = api(pipeline.user)
    session = create(client, pipeline.injection.pk)
    with nothing_changed():
        response = _start(client, session["id"], _bad(stream.header, BAD_HEADERS[code]))
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert LiveSession.objects.get().status == "open"


def test_ragged_fields_huge_strings_and_non_objects_are_refused(api, pipeline, stream):
    client = api(pipeline.user)
    session = create(client, pipeline.injection.pk)
    ragged = _bad(stream.header, lambda h: h["fields"].update({"/acquisition/odd": [[1, 2], [3]]}))
    assert _start(client, session["id"], ragged).json()["error"]["code"] == "invalid_field_value"
    long_text = _bad(stream.header, lambda h: h["fields"].update({"/experiment/description": "x" * 65537}))
    assert _start(client, session["id"], long_text).json()["error"]["code"] == "field_too_large"
    response = client.post(f"{URL}{session['id']}/start/", [1, 2], format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_stream_header"
    text = _bad(stream.header, lambda h: h["fields"].update({"/experiment/description": "x" * 5000}))
    assert _start(client, session["id"], text).status_code == 200  # one string is one value


def test_a_stream_that_does_not_fit_its_system_matrix_is_refused_with_an_alert(api, pipeline, stream, site_a):
    # A calibration of the same scanner measured with three receive channels.
    other = SystemMatrixFactory(
        scanner=pipeline.scanner,
        receive_channels=3,
        frequencies_count=stream.frames.shape[-1] // 2 + 1,
        base_frequency_hz=2.5e6,
        dividers=[51, 48],
        tracer_product=pipeline.system_matrix.tracer_product,
    )
    client = api(pipeline.user)
    session = create(client, pipeline.injection.pk, system_matrix=other.pk)
    response = _start(client, session["id"], stream.header)
    assert response.status_code == 409 and response.json()["error"]["code"] == "system_matrix_mismatch"
    assert "receive channels" in response.json()["error"]["message"]
    alert = LiveAlert.objects.get()  # committed although the start was refused
    assert alert.kind == "system_matrix_mismatch" and alert.session_id == session["id"]
    assert last_event().action == AuditAction.LIVE_ALERT_RAISED
    row = LiveSession.objects.get()
    assert row.status == "open" and row.recording == "" and row.header is None
    # Again: still one open alert of the kind.
    assert _start(client, session["id"], stream.header).status_code == 409
    assert LiveAlert.objects.count() == 1
