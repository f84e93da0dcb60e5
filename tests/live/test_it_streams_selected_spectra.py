"""A scanner that selects frequencies itself streams spectra (mpi-live/1 header payload
"spectra"): GET /live-sessions/{id}/ says which frequencies (``frequency_selection``), the
header carries them, each frame is (J, C, K_sel) complex64.

- each bad spectra header field: its code (400), nothing written, the session still open;
- each bad spectra frames message (samples instead of spectra, one bin short, NaN): its
  code, nothing recorded;
- the same simulated stream sent as samples and as spectra, through the API, the live
  worker with the real engine and the scan pipeline: the same live metrics (within
  LIVE_RTOL of the largest iron) and alerts, and the recorded scans quantify the same
  (within OFFLINE_RTOL);
- a selection that misses rows the live engine uses: a system_matrix_mismatch alert, and
  every frame still recorded into the scan.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from django.conf import settings

from imaging.models import Measurement, Scan
from live.models import LiveAlert, LiveSession
from live.worker import LiveWorker, live_params
from recon.live import stream_frequency_selection
from recon.mdf import MDFFile
from tests.imaging.helpers import process
from tests.live.stream import URL, create, post_frames, token_client

pytestmark = pytest.mark.usefixtures("memory_feed")

# complex64 spectra vs the engine's float32 rfft of float32 samples: ~1e-7 of the largest bin.
LIVE_RTOL = 1e-3
# The brief's bar for the offline result of the two recordings.
OFFLINE_RTOL = 0.005


def spectra_header(stream, selection) -> dict:
    header = copy.deepcopy(stream.header)
    header.update(payload="spectra", dtype="complex64", frequency_selection=list(selection))
    return header


def spectra_of(frames: np.ndarray, selection) -> np.ndarray:
    """What the bridge sends: the rfft of each period's raw samples at the selected (1-based) bins."""
    return np.fft.rfft(frames, axis=-1)[..., np.asarray(selection) - 1].astype("<c8")


def body(first: int, payload: np.ndarray, flags, times) -> bytes:
    head = {
        "first_frame": first,
        "count": int(payload.shape[0]),
        "acquired_at": list(times),
        "background": [bool(b) for b in flags],
    }
    return json.dumps(head).encode() + b"\n" + np.ascontiguousarray(payload).tobytes()


def _selection(client, sid) -> list[int]:
    response = client.get(f"{URL}{sid}/")
    assert response.status_code == 200, response.content
    return response.json()["frequency_selection"]


def test_the_session_says_which_frequencies_to_send(api, pipeline, imaging_a):
    client = api(pipeline.user)
    sid = create(client, pipeline.injection.pk, system_matrix=pipeline.system_matrix.pk)["id"]
    selection = _selection(client, sid)
    expected = stream_frequency_selection(
        settings.MEDIA_ROOT / pipeline.system_matrix.file,
        params=live_params(),
        calibration_sha256=pipeline.system_matrix.sha256,
    )
    assert selection == expected and selection == sorted(set(selection)) and selection[0] >= 1
    # the bridge's token (scope scanner) reads it
    assert _selection(token_client(api, pipeline.user, "scanner"), sid) == expected
    # no system matrix yet: null
    LiveSession.objects.filter(pk=sid).update(system_matrix=None)
    assert _selection(client, sid) is None


def _start(client, sid, header):
    return client.post(f"{URL}{sid}/start/", header, format="json")


BAD_SPECTRA_HEADERS = {
    "unsupported_payload": lambda h: h.update(payload="images"),
    "bad_frequency_selection": lambda h: h.update(frequency_selection=[5, 3]),
    "frequency_out_of_range": lambda h: h.update(frequency_selection=[1, 10**6]),
    "frequency_selection_too_large": lambda h: h.update(frequency_selection=list(range(1, 2**16 + 2))),
    "unsupported_dtype": lambda h: h.update(dtype="float32"),
}


@pytest.mark.parametrize("code", sorted(BAD_SPECTRA_HEADERS))
def test_each_bad_spectra_header_is_refused_with_its_code(api, pipeline, stream, code, nothing_changed):
    client = api(pipeline.user)
    sid = create(client, pipeline.injection.pk)["id"]
    header = spectra_header(stream, [2, 3, 4])
    BAD_SPECTRA_HEADERS[code](header)
    with nothing_changed():
        response = _start(client, sid, header)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert LiveSession.objects.get().status == "open"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h: h.pop("frequency_selection"), "lists the rfft bins"),
        (lambda h: (h.pop("payload"), h.update(dtype="float32")), "belongs to a spectra stream"),
        (lambda h: h.update(frequency_selection=[]), "non-empty"),
    ],
)
def test_a_selection_without_spectra_or_spectra_without_selection_is_refused(
    api, pipeline, stream, change, message, nothing_changed
):
    client = api(pipeline.user)
    sid = create(client, pipeline.injection.pk)["id"]
    header = spectra_header(stream, [2, 3, 4])
    change(header)
    with nothing_changed():
        response = _start(client, sid, header)
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_frequency_selection"
    assert message in response.json()["error"]["message"]


def test_a_spectra_session_records_a_frequency_domain_recording(api, pipeline, stream):
    client = api(pipeline.user)
    sid = create(client, pipeline.injection.pk, system_matrix=pipeline.system_matrix.pk)["id"]
    selection = _selection(client, sid)
    response = _start(client, sid, spectra_header(stream, selection))
    assert response.status_code == 200, response.content
    j, c, _ = stream.frames.shape[1:]
    assert response.json()["frame_shape"] == [j, c, len(selection)] and response.json()["dtype"] == "complex64"
    row = LiveSession.objects.get()
    assert row.header["payload"] == "spectra" and row.header["frequency_selection"] == selection
    # the same header again changes nothing
    assert _start(client, sid, spectra_header(stream, selection)).status_code == 200
    with MDFFile(settings.MEDIA_ROOT / row.recording) as f:
        assert f.layout["isFourierTransformed"] and f.layout["isFrequencySelection"]
        assert (f.available_frequencies + 1).tolist() == selection


def test_each_bad_spectra_frames_message_is_refused_and_nothing_recorded(api, pipeline, stream):
    client = api(pipeline.user)
    sid = create(client, pipeline.injection.pk, system_matrix=pipeline.system_matrix.pk)["id"]
    selection = _selection(client, sid)
    assert _start(client, sid, spectra_header(stream, selection)).status_code == 200
    frames, flags = stream.frames[:3], stream.background[:3]
    times = [1.7e9 + 0.02 * i for i in range(3)]
    good = spectra_of(frames, selection)
    nan = good.copy()
    nan[1, 0, 0, 2] = complex(np.nan, 0)
    cases = {
        "bad_frame_length": [
            body(0, frames.astype("<f4"), flags, times),  # samples sent to a spectra session
            body(0, good[..., :-1], flags, times),  # one bin short
            body(0, good.astype("<c16"), flags, times),  # complex128
        ],
        "non_finite_samples": [body(0, nan, flags, times)],
    }
    for code, messages in cases.items():
        for message in messages:
            response = post_frames(client, sid, message)
            assert response.status_code == 400, response.content
            assert response.json()["error"]["code"] == code
    row = LiveSession.objects.get()
    assert row.frames_recorded == 0 and row.frames_received == 0
    with MDFFile(settings.MEDIA_ROOT / row.recording) as f:
        assert f.num_frames == 0
    assert post_frames(client, sid, body(0, good, flags, times)).status_code == 200


def _stream_and_end(client, sid, payload, flags, times) -> int:
    for first in range(0, len(flags), 4):
        stop = min(first + 4, len(flags))
        response = post_frames(client, sid, body(first, payload[first:stop], flags[first:stop], times[first:stop]))
        assert response.status_code == 200, response.content
    response = client.post(f"{URL}{sid}/end/", {"frames_sent": len(flags)}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["scan"]


def _run_worker(memory_feed, sid) -> tuple[list[dict], list[str]]:
    assert LiveWorker(sid, memory_feed.get()).run() == "ended"
    events = [e for _, e in memory_feed.get().read_events(sid, None, block_ms=0)]
    alerts = sorted(LiveAlert.objects.filter(session_id=sid).values_list("kind", flat=True))
    return [e for e in events if e["type"] == "metrics"], alerts


def test_samples_and_spectra_of_the_same_frames_monitor_and_quantify_the_same(
    api, pipeline, stream, memory_feed, tmp_path
):
    settings.LIVE_OPERATOR_CACHE_DIR = tmp_path / "operators"
    client = api(pipeline.user)
    times = [1.7e9 + 0.02 * i for i in range(stream.count)]
    # as samples
    samples_sid = create(client, pipeline.injection.pk, system_matrix=pipeline.system_matrix.pk)["id"]
    assert _start(client, samples_sid, stream.header).status_code == 200
    samples_scan = _stream_and_end(client, samples_sid, stream.frames.astype("<f4"), stream.background, times)
    # as spectra
    spectra_sid = create(client, pipeline.injection.pk, system_matrix=pipeline.system_matrix.pk)["id"]
    selection = _selection(client, spectra_sid)
    assert _start(client, spectra_sid, spectra_header(stream, selection)).status_code == 200
    payload = spectra_of(stream.frames, selection)
    spectra_scan = _stream_and_end(client, spectra_sid, payload, stream.background, times)
    assert payload[0].nbytes < stream.frames[0].astype("<f4").nbytes

    live_samples, alerts_samples = _run_worker(memory_feed, samples_sid)
    live_spectra, alerts_spectra = _run_worker(memory_feed, spectra_sid)
    assert [m["frame"] for m in live_spectra] == [m["frame"] for m in live_samples]
    assert live_samples and alerts_spectra == alerts_samples
    scale = max(abs(r["iron_ng"]) for m in live_samples for r in m["rois"].values())
    for a, b in zip(live_samples, live_spectra, strict=True):
        for name, roi in a["rois"].items():
            assert b["rois"][name]["iron_ng"] == pytest.approx(roi["iron_ng"], abs=LIVE_RTOL * scale)

    quantified = {}
    for scan_id in (samples_scan, spectra_scan):
        scan = process(Scan.objects.get(pk=scan_id))
        assert scan.status == "quantified", scan.status_reason
        quantified[scan_id] = {m.roi_name: m.iron_ng for m in Measurement.objects.filter(scan=scan)}
    reference, recorded = quantified[samples_scan], quantified[spectra_scan]
    assert reference and set(recorded) == set(reference)
    total = sum(abs(v) for v in reference.values())
    for name, iron in reference.items():
        assert recorded[name] == pytest.approx(iron, abs=OFFLINE_RTOL * total)


def test_a_selection_missing_live_rows_alerts_and_still_records_every_frame(
    api, pipeline, stream, memory_feed, tmp_path
):
    settings.LIVE_OPERATOR_CACHE_DIR = tmp_path / "operators"
    client = api(pipeline.user)
    sid = create(client, pipeline.injection.pk, system_matrix=pipeline.system_matrix.pk)["id"]
    short = _selection(client, sid)[1::2]
    assert _start(client, sid, spectra_header(stream, short)).status_code == 200
    times = [1.7e9 + 0.02 * i for i in range(stream.count)]
    scan = _stream_and_end(client, sid, spectra_of(stream.frames, short), stream.background, times)
    metrics, alerts = _run_worker(memory_feed, sid)
    assert metrics == [] and "system_matrix_mismatch" in alerts
    alert = LiveAlert.objects.get(session_id=sid, kind="system_matrix_mismatch")
    assert "of the live rows' frequencies are not in the stream's frequency selection" in alert.message
    row = LiveSession.objects.get(pk=sid)
    assert row.frames_recorded == stream.count and row.scan_id == scan
    with MDFFile(settings.MEDIA_ROOT / row.recording) as f:
        assert f.num_frames == stream.count
