"""Issue #12: every task has soft and hard time limits, and the embedded default's worker
runs them in a pool that enforces them. A task past its hard limit is killed, its scan
ends ``failed`` with the reason, and the next scan is processed instead of waiting."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from config.celery import app
from tests.imaging import tus
from tests.imaging.test_worker_killed_on_embedded_broker import filesystem_broker  # noqa: F401 (fixture)
from tests.imaging.worker import SLOW_RECONSTRUCTION_SLEEPING, Worker, scan_state, wait_for
from trials.management.commands.runplatform import worker_command

HARD_LIMIT_S = 3


def _another_scan(source, tmp_path) -> Path:
    path = tmp_path / "another.mdf"
    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as h5:
        del h5["/experiment/name"]
        h5["/experiment/name"] = "a later scan"
    return path


def test_every_task_has_a_soft_and_a_hard_time_limit():
    app.loader.import_default_modules()  # every app's tasks module, as a worker imports them
    ours = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    assert {
        "imaging.validate_scan",
        "imaging.reconstruct_scan",
        "imaging.quantify_scan",
        "imaging.send_dicom",
        "compliance.run_export",
    } <= set(ours)
    for name, task in ours.items():
        assert task.soft_time_limit and task.time_limit, name
        assert 0 < task.soft_time_limit < task.time_limit, name


def test_the_embedded_worker_runs_tasks_in_a_pool_that_enforces_time_limits():
    command = worker_command()
    # solo and threads pools ignore time_limit and soft_time_limit; prefork enforces both.
    assert command[command.index("--pool") + 1] == "prefork"
    assert command[command.index("--concurrency") + 1] == "1"
    assert "solo" not in command and "threads" not in command


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_a_task_past_its_hard_limit_is_killed_and_the_next_scan_goes_on(api, pipeline, tmp_path, filesystem_broker):  # noqa: F811
    # Soft limit = hard limit: billiard checks the hard one first, so only the kill can end the
    # stuck step (as when a long C call never gives the soft limit's exception a chance).
    env = {
        "CELERY_BROKER_URL": "filesystem://",
        "MPI_VAR_DIR": filesystem_broker,
        "IMAGING_TASK_SOFT_TIME_LIMIT": HARD_LIMIT_S,
        "IMAGING_TASK_TIME_LIMIT": HARD_LIMIT_S,
    }
    worker = Worker("embedded", "filesystem://", tmp_path, argv=worker_command("embedded@%h"), slow=600, **env)
    try:
        client = api(pipeline.user)
        _, first = tus.upload_file(client, pipeline.sim["measurement"], pipeline=pipeline, hours=48)
        _, second = tus.upload_file(
            client, _another_scan(pipeline.sim["measurement"], tmp_path), pipeline=pipeline, hours=72
        )
        first_id, second_id = int(first["Scan-Id"]), int(second["Scan-Id"])

        wait_for(
            lambda: scan_state(first_id)[0] == "failed",
            timeout=120,
            what="the stuck reconstruction to be killed at its hard limit",
            logs=[worker],
        )
        from imaging.models import Scan

        scan = Scan.objects.get(pk=first_id)
        assert "hard time limit" in scan.status_reason and f"{HARD_LIMIT_S} s" in scan.status_reason
        assert SLOW_RECONSTRUCTION_SLEEPING in worker.log()  # stopped while asleep in the reconstruction
        assert scan.retryable
        # Not blocked behind it: the next scan is validated and its reconstruction claimed (then killed too).
        wait_for(
            lambda: scan_state(second_id)[0] == "failed",
            timeout=120,
            what="the next scan to be processed",
            logs=[worker],
        )
        assert worker.process.poll() is None, "the worker itself must survive its tasks' kills"
    finally:
        worker.stop()
