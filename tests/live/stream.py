"""Helpers that speak mpi-live/1 as the bridge does: header fields read from an MDF file,
frames messages, and the calls of a stream."""

from __future__ import annotations

import json

import h5py
import numpy as np
from django.utils import timezone

from compliance.tokens import token_issue

PREFIXES = ("/study/", "/experiment/", "/scanner/", "/acquisition/", "/tracer/")
URL = "/api/v1/live-sessions/"
FRAMES_TYPE = "application/vnd.mpi-live.frames"


def header_fields(path) -> dict:
    """An MDF file's header fields as JSON values (what the bridge sends)."""
    out: dict = {}

    def visit(name, obj):
        key = "/" + name
        if isinstance(obj, h5py.Dataset) and key.startswith(PREFIXES):
            value = obj[()]
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, np.ndarray) and value.dtype.kind == "S":
                value = np.char.decode(value, "utf-8").tolist()
            elif isinstance(value, np.ndarray | np.generic):
                value = value.tolist()
            out[key] = value

    with h5py.File(path, "r") as h5:
        h5.visititems(visit)
    return json.loads(json.dumps(out))


def acquired_at(first: int, count: int, *, start: float | None = None) -> list[float]:
    """Acquisition times of frames first..first+count-1, 20 ms apart, from ``start`` (now)."""
    start = timezone.now().timestamp() if start is None else start
    return [start + 0.02 * i for i in range(first, first + count)]


def frames_body(first: int, frames: np.ndarray, flags, times=None, **overrides) -> bytes:
    head = {
        "first_frame": first,
        "count": int(frames.shape[0]),
        "acquired_at": times if times is not None else acquired_at(first, frames.shape[0], start=1.7e9),
        "background": [bool(b) for b in flags],
    }
    head.update(overrides)
    return json.dumps(head).encode() + b"\n" + np.ascontiguousarray(frames).astype("<f4").tobytes()


def post_frames(client, session_id: int, body: bytes, **extra):
    return client.generic("POST", f"{URL}{session_id}/frames/", body, content_type=FRAMES_TYPE, **extra)


def send(client, session_id: int, stream, first: int, stop: int, times=None):
    return post_frames(
        client,
        session_id,
        frames_body(first, stream.frames[first:stop], stream.background[first:stop], times),
    )


def create(client, injection_id: int, **extra) -> dict:
    response = client.post(URL, {"injection": injection_id, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def started(client, pipeline, stream) -> dict:
    """A session of the pipeline's injection that streams the simulated measurement."""
    session = create(client, pipeline.injection.pk)
    response = client.post(f"{URL}{session['id']}/start/", stream.header, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def token_client(api, user, scope: str):
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=user, name=f'{scope} client', scope=scope).key}")
    return client
