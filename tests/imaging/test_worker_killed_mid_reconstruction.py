"""A worker killed with SIGKILL in the middle of a reconstruction: the broker redelivers
the task to a second worker, which completes it exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.models import Reconstruction
from tests.imaging import tus
from tests.imaging.worker import Worker, assert_completed_once, kill_mid_reconstruction, purge, scan_state, wait_for
from tests.services import redis_url, require_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def broker():
    # Autouse, so the skip (or CI failure) comes before any row is written.
    require_postgres()
    url = redis_url()
    purge(url)
    return url


def test_it_redelivers_the_task_of_a_killed_worker_and_completes_once(api, pipeline, tmp_path, settings, broker):
    # The first worker sleeps after claiming the reconstruction: a wide window to kill it in.
    first = Worker("doomed", broker, tmp_path, slow=60)
    second = None
    try:
        _, last = tus.upload_file(api(pipeline.user), pipeline.sim["measurement"], pipeline=pipeline, hours=48)
        scan_id = int(last["Scan-Id"])
        attempt_killed = kill_mid_reconstruction(first, scan_id)

        second = Worker("rescuer", broker, tmp_path)
        wait_for(
            lambda: scan_state(scan_id)[0] in ("quantified", "failed"),
            timeout=180,
            what="the redelivered task to finish",
            logs=[first, second],
        )
        scan = assert_completed_once(scan_id, pipeline, attempt_killed)
        (reconstruction,) = Reconstruction.objects.filter(scan=scan)
        assert reconstruction.attempt <= scan.attempt
        claims = [
            e.changes["status"]
            for e in AuditEvent.objects.filter(action=AuditAction.SCAN_STATUS_CHANGED, object_id=str(scan_id)).order_by(
                "sequence"
            )
            if e.changes["status"][1] == "reconstructing"
        ]
        assert claims == [["validated", "reconstructing"], ["reconstructing", "reconstructing"]]
        recon_dir = Path(settings.MEDIA_ROOT) / "imaging" / "scans" / str(pipeline.subject.pk) / "reconstructions"
        assert [p.name for p in recon_dir.iterdir()] == [Path(reconstruction.file).name]
    finally:
        first.stop()
        if second is not None:
            second.stop()
