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

import base64

import numpy as np
from django.http import HttpRequest, JsonResponse

from live.events import _authenticated, _error
from live.selectors import live_sessions_visible_to
from live.transport import get_transport
from live.worker import reduce_projection

PLANES = {"x": 0, "y": 1, "z": 2}


def session_slice(request: HttpRequest, pk: int) -> JsonResponse:
    if request.method not in ("GET", "HEAD"):
        return _error("method_not_allowed", f'Method "{request.method}" not allowed.', 405, {"Allow": "GET, HEAD"})
    user, refused = _authenticated(request)
    if refused is not None:
        return refused
    if not live_sessions_visible_to(user).filter(pk=pk).exists():
        return _error("not_found", "Not found.", 404)
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
