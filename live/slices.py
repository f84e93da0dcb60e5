"""GET /api/v1/live-sessions/{id}/slice/?plane=z&index=12: one slice of the latest live image.

The ``image`` events carry the maximum-intensity projection along z to every viewer; a 3D
session's whole latest volume stays in the transport (``Transport.put_volume``, replaced
by each image) and a viewer who chose a slice asks for that slice only, after each
``image`` event (the live page asks at most once per image, one request at a time): the
bytes of a slice go only to those looking at one.

Authenticated and scoped as the event stream (``live.events``): a person's session or a
``read`` token, the session through ``live.selectors.live_sessions_visible_to`` (another
site's user and any sponsor: 404).

Answer: ``frame`` (the last frame in the image), ``plane`` (``x``, ``y`` or ``z``: the axis
held at ``index``), ``index``, ``volume_shape`` (nx, ny, nz), ``slice_shape`` [a, b] and
``data`` (``base64-float32-le``, a-major: for plane z a = x, b = y; plane y: x, z; plane
x: y, z; reduced by block maxima beyond ``live.worker.MAX_IMAGE_SIDE`` per side), ``max_ng``
(the volume's maximum), ``unit`` (ng Fe per voxel), ``provisional``. 400 ``invalid_plane``
/ ``invalid_index``; 409 ``no_volume`` while the session has no 3D image.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time

import numpy as np
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse

from live.events import _authenticated, _error
from live.selectors import live_sessions_visible_to
from live.transport import get_transport
from live.worker import reduce_projection

PLANES = {"x": 0, "y": 1, "z": 2}


#: How long a viewer's right to a session's slices, once checked, is taken as still given:
#: the page asks once per image (5 a second), so the check (credential, site scope: database
#: queries on the process's one thread for sync code, where the ingest path records frames)
#: runs once per viewer and session in this long, not per image. A revoked token, a closed
#: login or a withdrawn membership stops the slices at most this much later (the event stream
#: and every other endpoint check each request).
ACCESS_KEPT_S = 10.0
_ACCESS_KEPT_MAX = 10_000

_access_lock = threading.Lock()
_access: dict[tuple[str, int], float] = {}  # (credential digest, session) -> monotonic time it lapses


def _credential(request: HttpRequest) -> str | None:
    """A digest of what authenticates the request (its Authorization header and session cookie)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    cookie = request.COOKIES.get(settings.SESSION_COOKIE_NAME, "")
    if not header and not cookie:
        return None
    return hashlib.sha256(f"{header}\0{cookie}".encode("utf-8", "surrogateescape")).hexdigest()


def _access_kept(credential: str | None, pk: int) -> bool:
    if credential is None:
        return False
    with _access_lock:
        until = _access.get((credential, pk))
        return until is not None and time.monotonic() < until


def _keep_access(credential: str | None, pk: int) -> None:
    if credential is None:
        return
    now = time.monotonic()
    with _access_lock:
        if len(_access) >= _ACCESS_KEPT_MAX:
            for key in [k for k, until in _access.items() if until <= now] or list(_access)[: _ACCESS_KEPT_MAX // 2]:
                del _access[key]
        _access[(credential, pk)] = now + ACCESS_KEPT_S


def forget_access() -> None:
    """Forget every kept check (tests)."""
    with _access_lock:
        _access.clear()


async def session_slice(request: HttpRequest, pk: int) -> JsonResponse:
    """Async: a viewer whose access was checked within ``ACCESS_KEPT_S`` gets the slice without
    the database, its numpy work in the thread pool; otherwise the full check first, on the
    thread for sync code (``benchmarks/live.py --viewers 20 --slices``: 20 viewers' slice
    requests on that thread queued the scanner's frames behind them)."""
    if request.method not in ("GET", "HEAD"):
        return _error("method_not_allowed", f'Method "{request.method}" not allowed.', 405, {"Allow": "GET, HEAD"})
    credential = _credential(request)
    if not _access_kept(credential, pk):
        refused = await sync_to_async(_check_access)(request, pk)
        if refused is not None:
            return refused
        _keep_access(credential, pk)
    return await asyncio.to_thread(_slice, request, pk)


def _check_access(request: HttpRequest, pk: int) -> JsonResponse | None:
    user, refused = _authenticated(request)
    if refused is not None:
        return refused
    if not live_sessions_visible_to(user).filter(pk=pk).exists():
        return _error("not_found", "Not found.", 404)
    return None


def _slice(request: HttpRequest, pk: int) -> JsonResponse:
    plane = request.GET.get("plane", "z")
    if plane not in PLANES:
        return _error("invalid_plane", "plane is x, y or z.", 400)
    latest = get_transport().latest_volume(pk)
    if latest is None:
        return _error("no_volume", "No 3D live image yet: slices exist once a 3D session's image is made.", 409)
    frame, volume = latest
    axis = PLANES[plane]
    size = int(volume.shape[axis])
    try:
        index = int(request.GET.get("index", size // 2))
    except ValueError:
        index = -1
    if not 0 <= index < size:
        return _error("invalid_index", f"index is a whole number from 0 to {size - 1} for plane {plane}.", 400)
    cut = reduce_projection(np.take(volume, index, axis=axis)).astype("<f4")
    response = JsonResponse(
        {
            "frame": frame,
            "plane": plane,
            "index": index,
            "volume_shape": [int(v) for v in volume.shape],
            "slice_shape": [int(v) for v in cut.shape],
            "encoding": "base64-float32-le",
            "data": base64.b64encode(cut.tobytes()).decode("ascii"),
            "max_ng": float(volume.max()) if volume.size else 0.0,
            "unit": "ng Fe per voxel",
            "provisional": True,
        }
    )
    response["Cache-Control"] = "no-store"
    return response


session_slice.initkwargs = {"basename": "live-session"}  # type: ignore[attr-defined]  # as live.events
