"""The chosen slice of a 3D session's latest live image (``live.slices``): the worker keeps
the volume in the transport (not in every viewer's events), a viewer of the site fetches
one slice of it; another site's user and sponsors get 404, nothing leaks on refusal."""

from __future__ import annotations

import base64
import time
import uuid

import numpy as np
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from live.transport import MemoryTransport, RedisTransport
from live.worker import LiveWorker
from tests.live.conftest import events_of, publish
from tests.services import redis_url


def url(session) -> str:
    return f"/api/v1/live-sessions/{session.pk}/slice/"


def get(user, session, **params):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client.get(url(session), params)


def decode(body: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(body["data"]), dtype="<f4").reshape(body["slice_shape"])


@pytest.fixture
def imaged(live, transport, engines):
    """The worker ran over 20 frames of a 3D session: its latest image volume (6 x 5 x 3,
    the fake engine's: one voxel (2, 3, 1) holding the frame's summed region iron) kept."""
    publish(transport, live.session, 0, np.tile([100.0, 5.0, 20.0], (20, 1)), t0=time.time() - 1.0)
    LiveWorker(live.session.pk, transport, engine_factory=engines.factory).run(max_blocks=1)
    return live.session


def test_the_worker_keeps_the_3d_volume_and_the_events_carry_only_the_projection(imaged, transport):
    frame, volume = transport.latest_volume(imaged.pk)
    assert volume.shape == (6, 5, 3) and volume.dtype == np.float32
    assert volume[2, 3, 1] == pytest.approx(125.0)
    assert frame == 19
    image = events_of(transport, imaged, "image")[-1]
    assert set(image) >= {"mip_z", "shape"} and not {"volume", "data"} & set(image)


@pytest.mark.parametrize(
    "plane,index,shape,hot",
    [("z", 1, [6, 5], (2, 3)), ("y", 3, [6, 3], (2, 1)), ("x", 2, [5, 3], (3, 1)), ("x", 0, [5, 3], None)],
)
def test_a_viewer_of_the_site_gets_the_chosen_slice(imaging_a, imaged, plane, index, shape, hot):
    response = get(imaging_a, imaged, plane=plane, index=index)
    assert response.status_code == 200
    body = response.json()
    assert (body["plane"], body["index"], body["slice_shape"], body["volume_shape"]) == (plane, index, shape, [6, 5, 3])
    assert body["frame"] == 19 and body["max_ng"] == pytest.approx(125.0)
    cut = decode(body)
    if hot is None:
        assert not cut.any()
    else:
        assert cut[hot] == pytest.approx(125.0) and np.count_nonzero(cut) == 1
    assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "params,code",
    [
        ({"plane": "w"}, "invalid_plane"),
        ({"plane": "z", "index": 3}, "invalid_index"),
        ({"plane": "x", "index": "a"}, "invalid_index"),
    ],
)
def test_a_bad_plane_or_index_is_400(imaging_a, imaged, params, code):
    response = get(imaging_a, imaged, **params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("who", ["coordinator_b", "sponsor"])
def test_another_site_and_sponsors_get_404(request, imaged, who):
    response = get(request.getfixturevalue(who), imaged, plane="z", index=1)
    assert response.status_code == 404
    assert "data" not in response.json()


def test_no_credentials_is_401_and_no_volume_yet_is_409(imaging_a, live, transport):
    assert get(None, live.session).status_code == 401
    response = get(imaging_a, live.session)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_volume"


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_both_transports_keep_the_latest_volume_only(kind):
    transport = MemoryTransport() if kind == "memory" else RedisTransport(redis_url())
    session_id = uuid.uuid4().int % 10**12
    assert transport.latest_volume(session_id) is None
    transport.put_volume(session_id, 4, np.ones((3, 2, 2)))
    volume = np.arange(12, dtype=np.float64).reshape(3, 2, 2)
    transport.put_volume(session_id, 9, volume)
    frame, kept = transport.latest_volume(session_id)
    assert frame == 9
    np.testing.assert_array_equal(kept, volume.astype(np.float32))


def test_a_viewer_asking_after_each_image_is_checked_once_then_again_once_the_check_lapses(
    imaging_a, imaged, monkeypatch
):
    """The page asks for its slice after every image (5 a second): the credential and site
    check runs once per viewer in ``ACCESS_KEPT_S``, not per image; after that, again, so a
    viewer whose login is closed stops getting slices."""
    from live import slices

    checks = []
    original = slices._check_access
    monkeypatch.setattr(slices, "_check_access", lambda request, pk: checks.append(pk) or original(request, pk))
    client = Client()
    client.force_login(imaging_a)
    with CaptureQueriesContext(connection) as checked:
        assert client.get(url(imaged)).status_code == 200
    with CaptureQueriesContext(connection) as kept:
        for _ in range(20):
            answer = client.get(url(imaged), {"plane": "x", "index": 1})
            assert answer.status_code == 200 and answer.json()["plane"] == "x"
    assert checks == [imaged.pk]
    # What is left per request is the middleware's (the login's session): the view's own
    # check (credential, site scope) is not repeated.
    assert len(kept) / 20 < len(checked)
    # Another viewer (another login) is checked on its own.
    assert get(imaging_a, imaged).status_code == 200 and len(checks) == 2

    monkeypatch.setattr(slices, "ACCESS_KEPT_S", 0.0)
    slices.forget_access()
    client.logout()
    assert client.get(url(imaged)).status_code == 401  # checked again: no longer signed in
    assert client.post(url(imaged)).status_code == 405
