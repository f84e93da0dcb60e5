"""The demo's live injection, streamed: a session for the demo injection, a scanner token
for the demo's imaging staff, and the bridge replaying the simulated stream into it.

The same path a site's scanner takes (``python -m bridge replay`` over HTTP with a
scanner-scoped token); used by ``manage.py demo_stream`` and by the button on the demo's
live page. Here, at the top of the layers, because it needs both live sessions and the
token service of compliance.

The simulated injection's start and stop are marked as a clinician marks them with the live
page's buttons: the bridge (``replay --mark``) posts them to the session's marks endpoint
when the stream reaches their frames (from the simulation's ``truth.json``), with a token
of the demo's imaging staff member (a person's ``full`` token, valid for the stream's
length, handed to the bridge in its environment, not on its command line). So the marks
are audited, shown to the viewers, written into the recording, and "% of the dose injected
so far" (``live.dose``) runs in the demo.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from compliance.tokens import scoped_token_issue, token_issue
from config.errors import RuleViolation
from config.token_scopes import TokenScope
from imaging.models import Scanner
from live import feed
from live.management.commands.load_demo_live import PROTOCOL, SCANNER_NAME, demo_injection, demo_live_dir
from live.models import LiveSession
from live.services.sessions import session_create
from recon.live_simulate import truth_mark_frames
from trials.models import Role, Trial
from trials.selectors import first_site_member

DEMO_STREAMER = "imaging_a"
#: The bridge's environment variable for the marks token (bridge.cli.MARKS_TOKEN_ENV).
MARKS_TOKEN_ENV = "MPI_BRIDGE_MARKS_TOKEN"  # noqa: S105 - the name of the variable, not a secret
#: The marks token outlives the stream by this much (a slow start, a resumed connection).
MARKS_TOKEN_MARGIN_S = 600.0


@dataclass(frozen=True)
class DemoStream:
    session: LiveSession
    command: list[str]  # the bridge's command line, the token replaced by "<token>"
    process: subprocess.Popen
    marks: list[tuple[str, int]]  # (kind, frame) the bridge enters


def demo_marks(truth: dict) -> list[tuple[str, int]]:
    """The simulated injection's start and stop marks as (kind, frame) from its ``truth.json``
    (an older one without the frames: from its injected-iron series)."""
    start, stop = truth_mark_frames(truth)
    return [("injection_start", start), ("injection_stop", stop)]


def demo_stream_ready() -> bool:
    return (demo_live_dir() / "stream.mdf").exists() and not settings.PRODUCTION


def start_demo_stream(*, base_url: str, speed: float = 1.0, log_path: Path | None = None) -> DemoStream:
    """Open a live session for the demo injection and start the bridge replaying into it."""
    if settings.PRODUCTION:
        raise RuleViolation("demo_only", "The demo stream runs only on a demo platform.")
    trial = Trial.objects.filter(protocol_number=PROTOCOL).first()
    injection = demo_injection(trial) if trial is not None else None
    stream = demo_live_dir() / "stream.mdf"
    if injection is None or not stream.exists():
        raise RuleViolation("demo_not_loaded", "The demo live injection is not loaded: run load_demo_live first.")
    user = first_site_member(injection.subject.site, Role.IMAGING_STAFF)
    if user is None:
        raise RuleViolation("demo_not_loaded", "The demo site has no imaging staff to stream.")
    scanner = Scanner.objects.filter(site=injection.subject.site, name=SCANNER_NAME).first()
    if scanner is None:
        raise RuleViolation("demo_not_loaded", "The demo's streaming scanner is missing: run load_demo_live first.")
    session = session_create(actor=user, injection=injection, scanner=scanner)
    feed.session_created(session.pk)
    issued = scoped_token_issue(
        actor=user,
        user=user,
        name=f"demo bridge, live session {session.pk}",
        scope=TokenScope.SCANNER,
        expires_in_days=1,
    )
    truth = json.loads((stream.parent / "truth.json").read_text())
    marks = demo_marks(truth)
    stream_s = float(truth["frame_duration_s"]) * len(truth["is_background"]) / (float(speed) if speed > 0 else 1.0)
    clinician = token_issue(
        user=user,
        name=f"demo injection marks, live session {session.pk}",
        actor=user,
        lifetime=dt.timedelta(seconds=stream_s + MARKS_TOKEN_MARGIN_S),
    )
    args = ["replay", str(stream), "--url", base_url, "--session", str(session.pk), "--speed", f"{speed:g}"]
    for kind, frame in marks:
        args += ["--mark", f"{kind}@{frame}"]
    command = [sys.executable, "-m", "bridge", *args, "--token"]
    env = {**os.environ, MARKS_TOKEN_ENV: clinician.key}
    log = open(log_path or (Path(settings.VAR_DIR) / f"demo-stream-{session.pk}.log"), "ab")  # noqa: SIM115 - the bridge's output, for as long as it runs
    process = subprocess.Popen(
        [*command, issued.key], cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    return DemoStream(session=session, command=[*command, "<token>"], process=process, marks=marks)


def summary_line(output: str) -> dict | None:
    """The bridge's JSON summary: its last line of output."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
