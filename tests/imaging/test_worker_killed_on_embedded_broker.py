"""The embedded default's filesystem broker forgets a task once a worker has taken it, so
a worker killed with SIGKILL mid-reconstruction leaves its scan claimed and no message
behind. The next worker to start sweeps stalled claims (whose lease ran out: the killed
worker stopped renewing it) back into the queue, and the claim makes the second run the only result."""

from __future__ import annotations

import time

import pytest

from tests.imaging import tus
from tests.imaging.worker import (
    Worker,
    assert_completed_once,
    drop_broker_connections,
    kill_mid_reconstruction,
    scan_state,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_SECONDS = 3


@pytest.fixture
def filesystem_broker(tmp_path, monkeypatch):
    """This process and the workers publish to and consume from one broker folder, whatever
    CELERY_BROKER_URL the test run has (Redis in CI)."""
    from config.celery import app

    monkeypatch.setenv("CELERY_BROKER_URL", "filesystem://")  # Celery reads it before its own setting

    var = tmp_path / "broker-var"
    folders = {name: var / "celery" / name for name in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    saved = app.conf.broker_url, app.conf.broker_transport_options
    app.conf.broker_url = "filesystem://"
    app.conf.broker_transport_options = {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
    }
    drop_broker_connections(app)
    assert app.connection_for_write().transport_cls == "filesystem"
    yield var
    app.conf.broker_url, app.conf.broker_transport_options = saved
    drop_broker_connections(app)


def test_a_killed_workers_scan_is_swept_back_and_completes_once(api, pipeline, tmp_path, filesystem_broker):
    env = {
        "CELERY_BROKER_URL": "filesystem://",
        "MPI_VAR_DIR": filesystem_broker,
        "CELERY_VISIBILITY_TIMEOUT": LEASE_SECONDS,
        "IMAGING_CLAIM_LEASE_SECONDS": LEASE_SECONDS,
    }
    first = Worker("doomed", "filesystem://", tmp_path, slow=60, **env)
    second = None
    try:
        _, last = tus.upload_file(api(pipeline.user), pipeline.sim["measurement"], pipeline=pipeline, hours=48)
        scan_id = int(last["Scan-Id"])
        attempt_killed = kill_mid_reconstruction(first, scan_id)
        queue = filesystem_broker / "celery" / "queue"
        assert not any(queue.iterdir()), "the filesystem broker kept the task: nothing here to test"
        time.sleep(LEASE_SECONDS + 1)  # the claim is now older than the lease
        assert scan_state(scan_id) == ("reconstructing", attempt_killed)

        second = Worker("rescuer", "filesystem://", tmp_path, **env)
        wait_for(
            lambda: scan_state(scan_id)[0] in ("quantified", "failed"),
            timeout=180,
            what="the swept task to finish",
            logs=[first, second],
        )
        assert_completed_once(scan_id, pipeline, attempt_killed)
        assert "requeued stalled scans" in second.log()
    finally:
        first.stop()
        if second is not None:
            second.stop()
