"""``python -m bridge replay --spectra`` against the platform (a live server, the scanner
token): the bridge reads the session's frequency_selection, the platform records every frame
as a frequency-domain MDF that validates, and the same measurement replayed as samples to a
second session sends more bytes, by the ratio of the frames' sizes (K_sel complex64 bins
against V float32 samples per channel) give or take the messages' JSON lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.conf import settings

from bridge.cli import main
from compliance.tokens import token_issue
from live.models import LiveSession
from recon.mdf import MDFFile
from recon.validate import validate
from tests.live.stream import create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_feed")]

# Besides the frames, a run sends the header (its fields) and a JSON line per message.
OVERHEAD = 0.1


def _replay(capsys, url: str, token: str, sid: int, measurement, *extra: str) -> dict:
    capsys.readouterr()
    rc = main(
        ["replay", str(measurement), "--url", url, "--token", token, "--session", str(sid), "--speed", "0", *extra]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_replay_spectra_end_to_end(api, pipeline, sim, live_server, capsys):
    person = api(pipeline.user)
    token = token_issue(user=pipeline.user, name="scanner 1", scope="scanner").key
    samples_sid = create(person, pipeline.injection.pk, system_matrix=pipeline.system_matrix.pk)["id"]
    spectra_sid = create(person, pipeline.injection.pk, system_matrix=pipeline.system_matrix.pk)["id"]

    samples = _replay(capsys, live_server.url, token, samples_sid, sim["measurement"])
    spectra = _replay(capsys, live_server.url, token, spectra_sid, sim["measurement"], "--spectra")

    selection = person.get(f"/api/v1/live-sessions/{spectra_sid}/").json()["frequency_selection"]
    for summary, sid in ((samples, samples_sid), (spectra, spectra_sid)):
        row = LiveSession.objects.get(pk=sid)
        assert summary["status"] == "ended" and summary["scan"] == row.scan_id
        assert summary["frames_sent"] == row.frames_recorded > 0
    assert samples["payload"] == "samples" and spectra["payload"] == "spectra"
    assert spectra["frequencies"] == len(selection)
    row = LiveSession.objects.get(pk=spectra_sid)
    assert row.header["payload"] == "spectra" and row.header["frequency_selection"] == selection
    path = settings.MEDIA_ROOT / row.recording
    report = validate(path)
    assert report.valid, report.as_dict()
    with MDFFile(path) as rec, MDFFile(settings.MEDIA_ROOT / LiveSession.objects.get(pk=samples_sid).recording) as src:
        assert (rec.available_frequencies + 1).tolist() == selection
        expected = src.spectra(frequencies=rec.available_frequencies)
        np.testing.assert_allclose(rec.spectra(), expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    frame_ratio = spectra["frame_bytes"] / samples["frame_bytes"]
    j, c, v = samples["frame_shape"]
    assert frame_ratio == pytest.approx(len(selection) * 8 / (v * 4))
    assert spectra["bytes_sent"] / samples["bytes_sent"] == pytest.approx(frame_ratio, abs=OVERHEAD)
    print(
        f"bytes per frame: samples {samples['frame_bytes']}, spectra {spectra['frame_bytes']} "
        f"({len(selection)} of {v // 2 + 1} bins); sent {samples['bytes_sent']} vs {spectra['bytes_sent']}"
    )
