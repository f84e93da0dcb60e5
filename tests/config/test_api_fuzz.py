"""Property-based fuzzing of the whole REST API against its own OpenAPI schema
(schemathesis, in-process over WSGI), once for every role of the fixed cast.

Every operation of ``/api/schema/`` is called with generated valid and invalid inputs
and every response is checked with all of schemathesis' checks: no 5xx, status codes,
content types, headers and bodies as documented, invalid input refused, valid input
accepted, and the stateful checks (use after free, resource availability, ignored
auth). Hypothesis runs derandomized, so a run is reproducible, with a bounded number of
examples per operation so the module runs in a few minutes on two cores.

Left out, with the reason:

* the tus upload resource (``/api/v1/uploads/{id}/``: HEAD offset, PATCH append,
  DELETE terminate) and tus creation (``POST /api/v1/uploads/``): their contract is
  the tus protocol's headers (Tus-Resumable, Upload-Offset, Upload-Checksum,
  Upload-Metadata) and raw ``application/offset+octet-stream`` bodies streamed into
  files, which OpenAPI cannot describe well enough to generate; they have
  their own tests (tests/imaging/test_tus_upload.py, test_upload_refusals.py), and
  the malformed metadata the fuzzer once found is pinned in tests/config/test_error_envelope.py.
* the live stream's header and frames (``POST /api/v1/live-sessions/{id}/start/`` and
  ``.../frames/``): a header is valid only with the MDF fields of a real acquisition that
  fits a calibration, and a frames body is a JSON line followed by raw samples of the
  stream's shape (protocol mpi-live/1, docs/live-protocol.md), neither of which OpenAPI
  can describe well enough to generate; each malformed kind has its own test
  (tests/live/test_it_opens_and_starts_live_sessions.py, test_it_records_frames_before_answering.py).
* the token endpoint (``POST /api/v1/auth/token/``): every generated wrong password
  counts towards the django-axes lockout of the same address, so fuzzing it locks the
  cast out of everything else mid-run; tests/trials/test_token.py covers it.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from compliance.models import ApiToken
from compliance.tokens import token_issue
from config.wsgi import application
from imaging.models import Scan
from tests import factories as f
from tests.imaging import factories as imf

ROLES = ["coordinator_a", "imaging_a", "investigator_a", "coordinator_b", "monitor", "sponsor", "auditor"]
MAX_EXAMPLES = 5
STATEFUL_EXAMPLES = 10

NOT_FUZZED = [
    ("/api/v1/uploads/{id}/", None),
    ("/api/v1/uploads/", "POST"),
    ("/api/v1/auth/token/", None),
    ("/api/v1/live-sessions/{id}/start/", "POST"),
    ("/api/v1/live-sessions/{id}/frames/", "POST"),
]


@pytest.fixture
def trial_data(ready, site_a, site_b, coordinator_a, coordinator_b, imaging_a):
    """Rows of every kind at both sites, so detail routes have real ids to reach."""
    subject, consent, batch = ready
    injection = f.InjectionFactory(subject=subject, batch=batch)
    scan = imf.ScanFactory(injection=injection)
    measurement = imf.MeasurementFactory(reconstruction=imf.ReconstructionFactory(scan=scan))
    imf.AlertFactory(scan=scan)
    imf.UploadFactory(injection=injection, created_by=imaging_a)
    imf.SystemMatrixFactory(scanner=scan.scanner)
    other = f.SubjectFactory(site=site_b)
    f.InjectionFactory(subject=other)
    imf.ScanFactory(subject=other, injection=f.InjectionFactory(subject=other), status=Scan.Status.FAILED)
    return measurement


# The token of the role under test, set by the ``role`` fixture and read by the auth
# provider below (which schemathesis calls without access to pytest's fixtures).
_ACTING: dict[str, Any] = {}


@pytest.fixture(params=ROLES)
def role(request, trial_data, coordinator_a, imaging_a, investigator_a, coordinator_b, monitor, sponsor, auditor):
    _ACTING["user"] = request.getfixturevalue(request.param)
    yield request.param
    _ACTING.clear()


def _live_token() -> str:
    """The role's token, issued again when a fuzzed call ended it (``DELETE
    /api/v1/auth/tokens/{id}/``, ``POST /api/v1/auth/logout/``), so every case runs as the role."""
    issued = _ACTING.get("issued")
    if issued is None or ApiToken.objects.filter(pk=issued.token.pk, revoked_at__isnull=False).exists():
        issued = _ACTING["issued"] = token_issue(user=_ACTING["user"], name="schemathesis")
    return issued.key


@pytest.fixture
def _keep_test_connection():
    # Django's WSGI handler closes the database connection when a request starts and
    # ends; the test client stops it doing so, and so must we, or the test's transaction
    # (and its data) is lost.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


def _load_schema():
    # The schema as /api/schema/ serves it (tests/config/test_api_docs_access.py checks
    # that they are the same), built here because test parametrization happens before
    # any database exists.
    from drf_spectacular.generators import SchemaGenerator

    loaded = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    loaded.app = application
    for path, method in NOT_FUZZED:
        loaded = loaded.exclude(path=path, method=method) if method else loaded.exclude(path=path)
    return loaded


schema = _load_schema()


@schema.auth(refresh_interval=None)
class RoleToken:
    """The role's API token, as explicit auth: schemathesis's ignored-auth check then
    removes it, and sends invalid tokens and session cookies, expecting a 401 or 403."""

    def get(self, case, ctx):
        return _live_token() if "user" in _ACTING else ""

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Token {data}"}


def _reference_missing(response) -> bool:
    """A 400 whose every field error says the id it names does not exist (among the
    rows you may see): the API's documented answer (tests/trials/test_error_shape.py),
    which no schema can predict for a generated id."""
    try:
        fields = response.json()["error"]["fields"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(fields) and all("does not exist" in message for messages in fields.values() for message in messages)


def _sponsor_filter_refused(response) -> bool:
    """The sponsor's documented 400 (compliance.sponsor.check_query): filtering or sorting
    the de-identified view by a real code or date would reveal it. The schema is one for
    every role, so it cannot say which role may use which filter."""
    try:
        return response.json()["error"]["code"] == "not_filterable"
    except (ValueError, KeyError, TypeError):
        return False


def positive_data_accepted(ctx, response, case):
    """schemathesis's positive_data_acceptance, less the two documented 400s above."""
    if response.status_code == 400 and (_reference_missing(response) or _sponsor_filter_refused(response)):
        return None
    return positive_data_acceptance(ctx, response, case)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@pytest.mark.usefixtures("_keep_test_connection")
def test_api_answers_as_documented(case, role):
    # Cases of the examples and coverage phases are generated (auth included) before the
    # role's token exists: give each the token here, as the provider does for the rest.
    RoleToken().set(case, _live_token(), None)
    case.call_and_validate(excluded_checks=[positive_data_acceptance], additional_checks=[positive_data_accepted])


class APIWorkflows(schema.as_state_machine()):  # type: ignore[misc]  # schemathesis builds the base class
    def validate_response(self, response, case, additional_checks=None, **kwargs):
        case.validate_response(
            response,
            excluded_checks=[positive_data_acceptance],
            additional_checks=[positive_data_accepted, *(additional_checks or [])],
            transport_kwargs=kwargs or None,
        )


@pytest.mark.usefixtures("_keep_test_connection")
def test_api_answers_as_documented_along_links(role):
    """Stateful: chains of calls along the links schemathesis infers between operations
    (an id a create answers, used by the detail, update and action routes)."""
    APIWorkflows.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
