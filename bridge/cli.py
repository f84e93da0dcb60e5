"""``python -m bridge replay|follow``: stream an MDF measurement to a live session.

Exit status: 0 streamed and ended (the JSON summary is the last stdout line); 1 the server
refused (its code and message on stderr) or failures outlasted --retry-for; 2 bad arguments
or a measurement that cannot be streamed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from bridge.client import Backoff, BridgeError, LiveClient, ServerRefused
from bridge.mdf_source import MDFSource, MDFSourceError
from bridge.protocol import MAX_BODY_BYTES
from bridge.stream import DEFAULT_MAX_MESSAGE_BYTES, MARK_KINDS, Mark, Streamer, StreamOptions

TOKEN_ENV = "MPI_BRIDGE_TOKEN"  # noqa: S105 - the name of the variable, not a secret
MARKS_TOKEN_ENV = "MPI_BRIDGE_MARKS_TOKEN"  # noqa: S105 - the name of the variable, not a secret


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's NoReturn: exits below
        self.exit(2, f"bridge: error: {message}\n")


def _positive(kind: type, *, allow_zero: bool = False) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if allow_zero else '> 0'}, got {text}")
        return value

    return parse


def _mark(text: str) -> Mark:
    kind, sep, frame = text.partition("@")
    if not sep or kind not in MARK_KINDS or not frame.isdigit():
        raise argparse.ArgumentTypeError(f"KIND@FRAME with KIND one of {', '.join(MARK_KINDS)}, got {text!r}")
    return Mark(frame=int(frame), kind=kind)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bridge", description="Stream MPI frames to a live session (mpi-live/1).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", required=True, help="the platform's base URL, e.g. https://mpi.example.org")
        p.add_argument("--token", help=f"API token of scope 'scanner' (default: ${TOKEN_ENV})")
        p.add_argument("--session", required=True, help="the live session's id")
        p.add_argument(
            "--batch-ms", type=_positive(float, allow_zero=True), default=50.0, help="oldest frame age per message (50)"
        )
        p.add_argument("--max-frames", type=_positive(int), default=None, help="send only the first N frames")
        p.add_argument(
            "--retry-for",
            type=_positive(float),
            default=300.0,
            help="give up after this many seconds of failures (300)",
        )
        p.add_argument("--timeout", type=_positive(float), default=30.0, help="seconds to wait for one answer (30)")
        p.add_argument(
            "--state",
            help="JSON file keeping the stream header: run again with the same --state to continue the session",
        )
        p.add_argument(
            "--max-message-mb",
            type=_positive(float),
            default=DEFAULT_MAX_MESSAGE_BYTES / 2**20,
            help="frame bytes per message (16)",
        )
        p.add_argument(
            "--spectra",
            action="store_true",
            help="send the selected spectra the session asks for (its frequency_selection: the rfft of each "
            "period at those bins, complex64) instead of the time-domain samples: far fewer bytes",
        )

    replay = sub.add_parser("replay", help="replay a recorded MDF measurement at the acquisition rate x speed")
    replay.add_argument("measurement", help="MDF v2 measurement file (time domain)")
    common(replay)
    replay.add_argument(
        "--speed", type=_positive(float, allow_zero=True), default=1.0, help="rate factor; 0 = as fast as possible (1)"
    )
    replay.add_argument(
        "--mark",
        type=_mark,
        action="append",
        default=[],
        metavar="KIND@FRAME",
        help="enter an injection mark (injection_start, _pause, _resume, _stop) when the stream reaches FRAME, "
        "as the live page's buttons do (a replayed injection's marks: the demo, training); repeatable",
    )
    replay.add_argument(
        "--marks-token",
        help=f"a person's API token (scope 'full') for --mark: the scanner token may not mark (default: ${MARKS_TOKEN_ENV})",
    )

    follow = sub.add_parser("follow", help="stream the frames a scanner appends to a growing MDF file")
    follow.add_argument("measurement", help="MDF v2 measurement file being written")
    common(follow)
    follow.add_argument(
        "--idle-end", type=_positive(float), default=10.0, help="end after this many seconds without a new frame (10)"
    )
    follow.add_argument("--poll-ms", type=_positive(float), default=50.0, help="how often to look for new frames (50)")
    follow.add_argument(
        "--wait-for-file",
        type=_positive(float, allow_zero=True),
        default=60.0,
        help="seconds to wait for a readable file (60)",
    )
    return parser


def _open_source(args: argparse.Namespace) -> MDFSource:
    if args.command == "replay":
        return MDFSource(args.measurement)
    deadline = time.monotonic() + args.wait_for_file
    while True:
        try:
            return MDFSource(args.measurement, growing=True)
        except MDFSourceError as exc:
            if time.monotonic() >= deadline:
                raise
            print(f"bridge: waiting for the measurement: {exc}", file=sys.stderr, flush=True)
            time.sleep(min(1.0, args.poll_ms / 1000.0 * 4))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"bridge: error: no token: give --token or set ${TOKEN_ENV}", file=sys.stderr)
        return 2
    if args.max_message_mb * 2**20 > MAX_BODY_BYTES - 2**20:
        print(f"bridge: error: --max-message-mb must be at most {MAX_BODY_BYTES // 2**20 - 1}", file=sys.stderr)
        return 2
    try:
        source = _open_source(args)
    except MDFSourceError as exc:
        print(f"bridge: error: {exc}", file=sys.stderr)
        return 2
    marks = tuple(getattr(args, "mark", None) or ())
    marks_token = (getattr(args, "marks_token", None) or os.environ.get(MARKS_TOKEN_ENV, "")) if marks else ""
    if marks and not marks_token:
        print(
            f"bridge: error: --mark needs a person's token: give --marks-token or set ${MARKS_TOKEN_ENV}",
            file=sys.stderr,
        )
        return 2
    options = StreamOptions(
        speed=getattr(args, "speed", 1.0),
        batch_ms=args.batch_ms,
        max_frames=args.max_frames,
        max_message_bytes=int(args.max_message_mb * 2**20),
        idle_end_s=getattr(args, "idle_end", 10.0),
        poll_s=getattr(args, "poll_ms", 50.0) / 1000.0,
        state_path=args.state,
        marks=marks,
        spectra=args.spectra,
    )
    with source:
        try:
            client = LiveClient(
                args.url, token, timeout_s=args.timeout, backoff=Backoff(retry_for_s=args.retry_for, log=sys.stderr)
            )
            mark_client = (
                LiveClient(
                    args.url,
                    marks_token,
                    timeout_s=args.timeout,
                    backoff=Backoff(retry_for_s=args.retry_for, log=sys.stderr),
                )
                if marks
                else None
            )
        except BridgeError as exc:
            print(f"bridge: error: {exc}", file=sys.stderr)
            return 2
        streamer = Streamer(client, args.session, source, options, kind=args.command, mark_client=mark_client)
        try:
            summary = streamer.replay() if args.command == "replay" else streamer.follow()
        except MDFSourceError as exc:
            print(f"bridge: error: {exc}", file=sys.stderr)
            if streamer.started_at:
                print(
                    f"bridge: the session stays streaming with {streamer.next_frame} frames recorded: "
                    "end or abort it on the platform",
                    file=sys.stderr,
                )
                _failed_summary(streamer, exc, code=None)
            return 2
        except ServerRefused as exc:
            print(f"bridge: error: {exc}", file=sys.stderr)
            _failed_summary(streamer, exc, code=exc.code)
            return 1
        except BridgeError as exc:
            print(f"bridge: error: {exc}", file=sys.stderr)
            _failed_summary(streamer, exc, code=None)
            return 1
        finally:
            client.close()
            if mark_client is not None:
                mark_client.close()
    print(json.dumps(summary), flush=True)
    return 0


def _failed_summary(streamer: Streamer, exc: Exception, *, code: str | None) -> None:
    """The same summary shape with the error, so a script sees how far the stream got."""
    print(
        json.dumps(
            {
                "frames_sent": streamer.next_frame,
                "session": streamer.session_id,
                "scan": None,
                "retries": streamer.client.backoff.retries,
                "payload": streamer.payload,
                "bytes_sent": streamer.client.bytes_sent,
                "error": {"code": code, "message": str(exc)},
            }
        ),
        flush=True,
    )
