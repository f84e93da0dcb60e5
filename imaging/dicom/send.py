"""Delivery of a study to a PACS: DIMSE C-STORE (pynetdicom) or DICOMweb STOW-RS (requests).

Both return a result with one status per object and raise :class:`DicomSendError`
(carrying that result) when the association or request fails or any object is
refused, so a caller (a Celery task) can retry or record exactly what failed. The
error says whether trying again later may succeed (``transient``): the PACS could not
be reached, timed out, answered HTTP 5xx/408/429 or rejected the association
transiently. A refusal of the request or of an object (HTTP 4xx, an A-ASSOCIATE-RJ
rejected-permanent, a DIMSE/STOW failure status) is permanent: sending the same bytes
again gets the same answer.
Both are slow network I/O: call them outside any database transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imaging.dicom.build import encode

# Status codes of PS3.4 C-STORE: 0x0000 success, 0xB000/0xB007/0xB006 warnings.
CSTORE_SUCCESS = 0x0000
CSTORE_WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
NO_RESPONSE = "no response (timeout or abort)"


@dataclass(frozen=True)
class ObjectStatus:
    sop_class_uid: str
    sop_instance_uid: str
    ok: bool
    status: int | None = None  # DIMSE status, or the DICOMweb FailureReason
    detail: str = ""


@dataclass(frozen=True)
class SendResult:
    destination: str
    objects: tuple[ObjectStatus, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return bool(self.objects) and all(o.ok for o in self.objects)

    @property
    def failed(self) -> tuple[ObjectStatus, ...]:
        return tuple(o for o in self.objects if not o.ok)


class DicomSendError(RuntimeError):
    """Delivery failed; ``result`` holds the per-object statuses known so far, and
    ``transient`` whether the same send may succeed later (see the module docstring)."""

    def __init__(self, message: str, result: SendResult, *, transient: bool = False):
        super().__init__(message)
        self.result = result
        self.transient = transient


# HTTP statuses worth trying again: a server error, a request timeout, rate limiting.
TRANSIENT_HTTP = frozenset({408, 429})


def transient_http(status_code: int) -> bool:
    return status_code >= 500 or status_code in TRANSIENT_HTTP


def _association_failure_is_transient(assoc) -> bool:
    # A-ASSOCIATE-RJ carries result 1 (rejected-permanent) or 2 (rejected-transient).
    # Accepted but with no usable presentation context: the PACS does not take these
    # objects, permanent. Anything else (connection refused or reset, ACSE timeout,
    # A-ABORT): the PACS is down or busy, transient.
    primitive = assoc.acceptor.primitive
    result = getattr(primitive, "result", None)
    if assoc.is_rejected:
        return result == 0x02
    return result != 0x00


def send_cstore(
    datasets: Sequence[Dataset],
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "MPITRIALS",
    *,
    timeout_s: float = 30.0,
) -> SendResult:
    """C-STORE every dataset over one association; raise DicomSendError if any fails."""
    from pynetdicom import AE  # imported here: only delivery needs the network stack

    destination = f"{called_ae}@{host}:{port}"
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        transient = _association_failure_is_transient(assoc)
        raise DicomSendError(
            f"association with {destination} was not established "
            f"(rejected={assoc.is_rejected}, aborted={assoc.is_aborted}, "
            f"{'transient' if transient else 'permanent'})",
            SendResult(destination),
            transient=transient,
        )
    statuses = []
    try:
        for ds in datasets:
            try:
                response = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as exc:  # no accepted context for this object
                statuses.append(_status(ds, ok=False, detail=str(exc)))
                continue
            code = int(response.Status) if "Status" in response else None
            ok = code == CSTORE_SUCCESS or code in CSTORE_WARNINGS
            detail = "" if code is not None else NO_RESPONSE
            statuses.append(_status(ds, ok=ok, status=code, detail=detail))
    finally:
        if assoc.is_established:
            assoc.release()
    result = SendResult(destination, tuple(statuses))
    if not result.ok:
        # Only objects that got no answer at all (DIMSE timeout, abort) are worth sending
        # again; a failure status is the PACS refusing the object.
        raise DicomSendError(
            f"C-STORE to {destination}: {len(result.failed)} of {len(statuses)} objects failed",
            result,
            transient=bool(result.failed) and all(o.status is None and o.detail == NO_RESPONSE for o in result.failed),
        )
    return result


def send_stowrs(
    datasets: Sequence[Dataset], base_url: str, auth=None, *, timeout_s: float = 60.0, session=None
) -> SendResult:
    """POST the datasets to ``{base_url}/studies`` as one multipart/related request.

    ``auth`` is anything requests accepts (a (user, password) tuple, an AuthBase).
    """
    import requests

    url = base_url.rstrip("/") + "/studies"
    boundary = f"mpi-{uuid.uuid4().hex}"
    parts = []
    for ds in datasets:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        parts.append(encode(ds))
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    http = session or requests
    try:
        response = http.post(url, data=b"".join(parts), headers=headers, auth=auth, timeout=timeout_s)
    except requests.RequestException as exc:
        # Not reached or no answer in time: transient. A malformed URL and the like: permanent.
        transient = isinstance(
            exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
        )
        raise DicomSendError(f"STOW-RS to {url} failed: {exc}", SendResult(url), transient=transient) from exc
    if response.status_code not in (200, 202):
        raise DicomSendError(
            f"STOW-RS to {url}: HTTP {response.status_code} {response.text[:200]}",
            SendResult(url, tuple(_status(ds, ok=False, detail=f"HTTP {response.status_code}") for ds in datasets)),
            transient=transient_http(response.status_code),
        )
    result = SendResult(url, _stow_statuses(datasets, response.json() if response.content else {}))
    if not result.ok:
        raise DicomSendError(f"STOW-RS to {url}: {len(result.failed)} of {len(datasets)} objects failed", result)
    return result


def _stow_statuses(datasets: Sequence[Dataset], body: dict) -> tuple[ObjectStatus, ...]:
    # PS3.18 10.5.3: Referenced SOP Sequence (0008,1199) lists what was stored,
    # Failed SOP Sequence (0008,1198) what was not, with a Failure Reason (0008,1197).
    stored = {_value(item, "00081155") for item in _items(body, "00081199")}
    failed = {_value(item, "00081155"): _value(item, "00081197") for item in _items(body, "00081198")}
    statuses = []
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        if uid in failed:
            statuses.append(_status(ds, ok=False, status=failed[uid], detail="in Failed SOP Sequence"))
        elif uid in stored:
            statuses.append(_status(ds, ok=True))
        else:
            statuses.append(_status(ds, ok=False, detail="not acknowledged by the server"))
    return tuple(statuses)


def _items(body: dict, tag: str) -> list[dict]:
    return (body.get(tag) or {}).get("Value", []) if isinstance(body, dict) else []


def _value(item: dict, tag: str):
    values = (item.get(tag) or {}).get("Value") or [None]
    return values[0]


def _status(ds: Dataset, *, ok: bool, status: int | None = None, detail: str = "") -> ObjectStatus:
    return ObjectStatus(str(ds.SOPClassUID), str(ds.SOPInstanceUID), ok, status, detail)
