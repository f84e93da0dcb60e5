"""PACS delivery retries transient failures (PACS down, timeout, HTTP 5xx/408/429, association
rejected transiently) with exponential backoff up to IMAGING_SEND_MAX_RETRIES, counting each
attempt on the DicomSend row and auditing only the final outcome; a permanent refusal
(HTTP 4xx, association rejected permanently) fails at once. The task runs here as a worker
runs it (a request with a task id, not eager), with publishing the retry captured."""

from __future__ import annotations

import http.server
import threading

import pytest
import requests
from celery.app.task import Task
from celery.exceptions import Retry
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging import pacs
from imaging.dicom import DicomSendError, build_study, send_cstore, send_stowrs
from imaging.models import DicomSend
from imaging.tasks import send_dicom
from tests.imaging.dicom_cases import quantified  # noqa: F401
from tests.imaging.orthanc import free_port, start_orthanc
from tests.imaging.test_dicom_build import make_case


@pytest.fixture
def run_task(monkeypatch):
    """``run_task(send_id, retries)``: the send task as a worker runs its delivery number
    ``retries`` (0 first). Returns its result, or the Retry it raised; ``run_task.published``
    lists the options of each retry published to the broker."""
    published = []
    monkeypatch.setattr(
        Task,
        "apply_async",
        lambda self, args=None, kwargs=None, **options: published.append(
            {"task": self.name, "args": tuple(args or ()), **options}
        ),
    )

    def run(send_id: int, retries: int):
        send_dicom.push_request(
            id=f"send-task-{send_id}", retries=retries, called_directly=False, is_eager=False, args=[send_id], kwargs={}
        )
        try:
            return send_dicom.run(send_id)
        except Retry as retry:
            return retry
        finally:
            send_dicom.pop_request()

    run.published = published
    return run


def _events(send: DicomSend, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(object_type="imaging.dicomsend", object_id=str(send.pk), action=action))


def _instances(server) -> int:
    return len(requests.get(f"{server['http']}/instances", auth=server["auth"], timeout=10).json())


def test_the_backoff_doubles_from_ten_seconds_up_to_fifteen_minutes():
    assert [pacs.send_backoff(n) for n in range(9)] == [10, 20, 40, 80, 160, 320, 640, 900, 900]


def test_a_send_to_a_pacs_that_is_down_is_retried_and_succeeds_once_it_is_up(
    quantified,  # noqa: F811
    coordinator_a,
    tmp_path,
    run_task,
):
    port = free_port()  # nothing listens here yet
    destination = pacs.pacs_destination_register(
        actor=None,
        trial=quantified.subject.trial,
        name="Late PACS",
        protocol="dicom",
        host="127.0.0.1",
        port=port,
        called_ae="ORTHANC",
        deidentify=False,
    )
    send = pacs.dicom_send_request(actor=coordinator_a, scan=quantified, destination=destination)

    for retries, countdown in [(0, 10), (1, 20)]:
        outcome = run_task(send.pk, retries)
        assert isinstance(outcome, Retry) and outcome.when == countdown
        assert run_task.published[-1]["countdown"] == countdown
        assert run_task.published[-1]["task"] == "imaging.send_dicom" and run_task.published[-1]["args"] == (send.pk,)
        send.refresh_from_db()
        assert send.status == "queued" and send.attempts == retries + 1 and not send.error
        assert "association" in send.last_error and "transient" in send.last_error
        assert pacs.send_retry_countdown(send) == countdown
    assert _events(send, AuditAction.DICOM_SEND_FAILED) == [] and _events(send, AuditAction.DICOM_SENT) == []

    with start_orthanc(tmp_path / "orthanc", dicom_port=port) as server:
        assert run_task(send.pk, 2) == "sent"
        send.refresh_from_db()
        assert send.status == "sent" and send.attempts == 3 and not send.error, send.error
        assert len(send.object_statuses) == 4 and all(o["ok"] for o in send.object_statuses)
        assert _instances(server) == 4
        # The broker delivers the last retry again (its worker died before the ack): no second send.
        assert run_task(send.pk, 2) == "claimed elsewhere or done"
        assert _instances(server) == 4
    send.refresh_from_db()
    assert send.attempts == 3 and len(run_task.published) == 2
    (sent,) = _events(send, AuditAction.DICOM_SENT)
    assert sent.changes["attempts"] == 3 and _events(send, AuditAction.DICOM_SEND_FAILED) == []


def test_the_last_transient_failure_is_final_and_audited_once(
    quantified,  # noqa: F811
    coordinator_a,
    settings,
    run_task,
):
    settings.IMAGING_SEND_MAX_RETRIES = 2
    destination = pacs.pacs_destination_register(
        actor=None,
        trial=quantified.subject.trial,
        name="Down",
        protocol="dicomweb",
        base_url=f"http://127.0.0.1:{free_port()}/dicom-web",
    )
    send = pacs.dicom_send_request(actor=coordinator_a, scan=quantified, destination=destination)
    assert isinstance(run_task(send.pk, 0), Retry) and isinstance(run_task(send.pk, 1), Retry)
    assert run_task(send.pk, 2) == "failed"
    send.refresh_from_db()
    assert send.status == "failed" and send.attempts == 3 and "STOW-RS" in send.error
    assert send.last_error == send.error and pacs.send_retry_countdown(send) is None
    (failed,) = _events(send, AuditAction.DICOM_SEND_FAILED)
    assert failed.changes["attempts"] == 3 and failed.changes["transient"] is True
    assert run_task(send.pk, 3) == "claimed elsewhere or done" and len(run_task.published) == 2


def test_a_4xx_stow_response_fails_at_once(
    quantified,  # noqa: F811
    coordinator_a,
    tmp_path,
    monkeypatch,
    run_task,
):
    monkeypatch.setenv("MPI_TEST_PACS_PASSWORD", "not-the-password")
    with start_orthanc(tmp_path / "orthanc", users={"mpi": "s3cret-pw"}) as server:
        destination = pacs.pacs_destination_register(
            actor=None,
            trial=quantified.subject.trial,
            name="Core lab",
            protocol="dicomweb",
            base_url=f"{server['http']}/dicom-web",
            username="mpi",
            password_env="MPI_TEST_PACS_PASSWORD",
        )
        send = pacs.dicom_send_request(actor=coordinator_a, scan=quantified, destination=destination)
        assert run_task(send.pk, 0) == "failed"
        assert _instances(server) == 0
    send.refresh_from_db()
    assert send.status == "failed" and send.attempts == 1 and "HTTP 401" in send.error
    assert run_task.published == []
    (failed,) = _events(send, AuditAction.DICOM_SEND_FAILED)
    assert failed.changes["transient"] is False


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 500

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_http():
    """``stub_http(status)`` -> the base URL of a local server answering every POST with ``status``."""
    servers = []

    def start(status: int) -> str:
        handler = type("Answer", (_Answer,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/dicom-web"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "status, transient",
    [
        (500, True),
        (502, True),
        (503, True),
        (408, True),
        (429, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (413, False),
    ],
)
def test_stow_http_statuses_are_classified(stub_http, status, transient):
    datasets = build_study(*make_case())[:1]
    with pytest.raises(DicomSendError, match=f"HTTP {status}") as raised:
        send_stowrs(datasets, stub_http(status))
    assert raised.value.transient is transient


def test_stow_to_a_closed_port_is_transient():
    with pytest.raises(DicomSendError) as raised:
        send_stowrs([], f"http://127.0.0.1:{free_port()}/dicom-web", timeout_s=5)
    assert raised.value.transient is True


def _scp(**options):
    from pynetdicom import AE, AllStoragePresentationContexts
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="PACS")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    for key, value in options.items():
        setattr(ae, key, value)
    port = free_port()
    return ae.start_server(("127.0.0.1", port), block=False), port


def test_an_association_rejected_permanently_is_not_retried():
    server, port = _scp(require_called_aet=True)
    try:
        with pytest.raises(DicomSendError, match="rejected=True") as raised:
            send_cstore(build_study(*make_case()), "127.0.0.1", port, called_ae="SOMEONE-ELSE", timeout_s=5)
        assert raised.value.transient is False
    finally:
        server.shutdown()


def test_an_association_rejected_transiently_is_retried():
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    server, port = _scp(maximum_associations=1)
    holder = AE(ae_title="HOLDER")
    holder.add_requested_context(Verification)
    held = holder.associate("127.0.0.1", port, ae_title="PACS")
    try:
        assert held.is_established
        with pytest.raises(DicomSendError, match="rejected=True") as raised:
            send_cstore(build_study(*make_case()), "127.0.0.1", port, called_ae="PACS", timeout_s=5)
        assert raised.value.transient is True
    finally:
        held.release()
        server.shutdown()
