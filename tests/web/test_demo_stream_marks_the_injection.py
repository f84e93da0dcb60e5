"""The demo stream marks its simulated injection (issue #16): the bridge that replays the
demo enters the injection start and stop marks when the stream reaches the simulated
injection's frames, through the live page's path (POST .../marks/ as the demo's imaging
staff member: audited, sent to the viewers, written into the recording), so the dose
injected so far (live.dose) is known in the demo. A real bridge process against a live
server, the embedded transport; the live worker itself is not run here (its use of the
marks is tests/live/test_dose_injected_so_far.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import ApiToken
from config.token_scopes import TokenScope
from live import feed
from live.dose import dose_so_far
from live.models import LiveMark, LiveSession
from live.transport import get_transport, reset_transport
from web import demo_stream

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def memory_feed(settings, monkeypatch):
    """The embedded transport, empty, shared with the live server's threads; no live worker
    started (the ingest path's ensure_worker / ensure_prepared are recorded, not run)."""
    settings.LIVE_TRANSPORT = "memory"
    reset_transport()
    monkeypatch.setattr(feed, "ensure_worker", lambda session_id: None)
    monkeypatch.setattr(feed, "ensure_prepared", lambda session_id: None)
    yield SimpleNamespace(get=get_transport)
    reset_transport()


@pytest.fixture
def demo(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()
    call_command("load_demo", stdout=io.StringIO())
    out = io.StringIO()
    call_command("load_demo_live", "--frames", "60", "--json", stdout=out)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_the_demo_bridge_marks_the_simulated_injection_start_and_stop(demo, live_server, memory_feed):
    truth = json.loads(Path(demo["truth"]).read_text())
    start, stop = truth["injection_start_frame"], truth["injection_stop_frame"]
    injected = truth["injected_ng"]
    # The truth's frames are the simulated injection's: nothing before start, the whole dose from stop - 1.
    assert injected[start - 1] == 0 < injected[start] and injected[stop - 2] < injected[stop - 1] == truth["dose_ng"]

    started = demo_stream.start_demo_stream(base_url=live_server.url, speed=0)
    log = django_settings.VAR_DIR / f"demo-stream-{started.session.pk}.log"
    assert started.process.wait(timeout=120) == 0, log.read_text()

    session = LiveSession.objects.get(pk=started.session.pk)
    assert session.status == "ended" and session.frames_recorded == len(truth["is_background"])
    assert started.marks == [("injection_start", start), ("injection_stop", stop)]
    assert not any("token" in part.lower() and len(part) > 20 for part in started.command)  # no key on the command line
    marks = list(LiveMark.objects.filter(session=session).order_by("at", "id"))
    # Entered when the stream reached the simulated injection's frames, by the demo's imaging staff member.
    assert [(m.kind, m.frame) for m in marks] == [("injection_start", start), ("injection_stop", stop)]
    assert {m.created_by.username for m in marks} == {demo_stream.DEMO_STREAMER}
    # Audited as the page's buttons are.
    events = AuditEvent.objects.filter(action=AuditAction.LIVE_MARK_ENTERED, object_id__in=[m.pk for m in marks])
    assert sorted(e.changes["kind"][1] for e in events) == ["injection_start", "injection_stop"]
    assert {e.actor.username for e in events} == {demo_stream.DEMO_STREAMER}
    # Sent to the viewers of the session (the event stream's mark events).
    sent = [e for _, e in memory_feed.get().read_events(session.pk, None, block_ms=0) if e["type"] == "mark"]
    assert [(e["kind"], e["frame"]) for e in sent] == [("injection_start", start), ("injection_stop", stop)]
    # Written into the recording the scan is made of.
    with h5py.File(django_settings.MEDIA_ROOT / session.scan.file, "r") as h5:
        assert [k.decode() for k in h5["/measurement/_marks"][()]] == ["injection_start", "injection_stop"]
        assert h5["/measurement/_markFrames"][()].tolist() == [start, stop]
    # So the dose injected so far is known: mid-injection a part of the dose, from the stop the whole.
    pairs = [(m.kind, m.frame) for m in marks]
    whole = truth["dose_ng"]
    middle = (start + stop) // 2
    kwargs = {"whole_ng": whole, "frame_duration_s": truth["frame_duration_s"], "expected_s": 0.0}
    assert dose_so_far(pairs, start - 1, **kwargs).ng is None
    assert dose_so_far(pairs, middle, **{**kwargs, "expected_s": 1.0}).ng == pytest.approx(
        whole * min(1.0, (middle + 1 - start) * truth["frame_duration_s"] / 1.0)
    )
    assert dose_so_far(pairs, stop, **kwargs).ng == whole
    # The marks token: a person's, short-lived (the stream's length and a margin).
    token = ApiToken.objects.get(name=f"demo injection marks, live session {session.pk}")
    assert token.scope == TokenScope.FULL and token.user.username == demo_stream.DEMO_STREAMER
    assert (token.expires_at - token.created_at).total_seconds() < 3600
