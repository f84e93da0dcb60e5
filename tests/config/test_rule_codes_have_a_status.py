"""A rule's code becomes an HTTP status in one table of the API layer
(``config.api_errors.STATUS_BY_CODE``), never in a service (issue #13).

An AST scan of the project finds every code raised (``RuleViolation("code", ...)``, a
code made from a field's name, a code passed on): each is in the table or deliberately a
409 Conflict, and no module outside the API layer names an HTTP status for a rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from config.api_errors import RULE_DEFAULT_STATUS, STATUS_BY_CODE, STATUS_BY_CODE_SUFFIX, status_for
from config.errors import RuleViolation

ROOT = Path(__file__).resolve().parents[2]
APPS = ("compliance", "config", "imaging", "live", "trials", "web")

# The codes that mean "the records' present state refuses this": answered 409 by default.
CONFLICTS = frozenset(
    {
        "alert_already_acknowledged",  # live: someone acknowledged the alert first
        "already_retired",
        "autologous_mismatch",
        "batch_already_labelled",
        "batch_not_labelled",
        "batch_not_released",
        "batch_rejected",
        "batch_site_mismatch",
        "cell_count_below_injected",
        "chain_of_identity_locked",
        "consent_correction_uncovers_injection",
        "consent_document_not_effective",
        "demo_not_loaded",
        "demo_only",
        "consent_document_superseded",
        "consent_document_wrong_trial",
        "consent_missing",
        "consent_not_in_force",  # live: checked before every block; the session is aborted
        "consent_superseded",
        "consent_withdrawn",
        "duplicate_roi",
        "duplicate_scan",
        "duplicate_system_matrix",
        "export_not_ready",
        "frame_gap",  # live: the answer carries next_frame
        "frames_missing",  # live: the answer carries next_frame
        "injection_already_started",  # live marks: the start is marked once
        "injection_not_paused",  # live marks: only a paused injection resumes
        "injection_not_running",  # live marks: only a running injection pauses
        "injection_not_started",  # live marks: pause, resume, stop after the start only
        "injection_stopped",  # live marks: nothing after the stop
        "insufficient_cells",
        "invalid_transition",
        "labelling_locked",
        "lot_expired",
        "lot_expiry_before_use",
        "lot_not_released",
        "lot_number_taken",  # the manufacturer's lot is registered once
        "lot_rejected",
        "no_frames_recorded",
        "no_system_matrix",
        "not_a_scan_upload",
        "not_retryable",
        "offset_mismatch",
        "password_missing",
        "recording_missing",
        "refile_cross_site",  # a scan is re-filed within its own site only
        "scan_busy",  # re-filing waits until the worker holding the scan has finished
        "scan_changed",  # re-filed meanwhile by someone else
        "scan_not_quantified",
        "scanner_mismatch",  # live: the system matrix named was measured on another scanner
        "scanner_required",  # live: the site has no scanner or several
        "scope_already_withdrawn",
        "scope_not_granted",
        "scopes_locked_after_withdrawal",
        "signed_after_withdrawal",
        "signed_before_withdrawal",
        "session_ended",
        "session_not_open",
        "session_not_live",  # live marks: the session has ended or was aborted
        "session_not_streaming",
        "status_unchanged",
        "stream_header_changed",
        "subject_not_enrolled",
        "subject_status_final",
        "subject_withdrawn",
        "system_matrix_mismatch",
        "system_matrix_not_found",  # live: not a calibration of the injection's site
        "system_matrix_retired",
        "trial_mismatch",
        "upload_already_registered",
        "upload_busy",
        "upload_closed",
        "upload_not_complete",
        "verifier_is_administrator",
    }
)
CONFLICT_SUFFIXES = frozenset({"_not_at_site"})

# Codes that are not literals where they are raised, with every value they can take.
PASSED_ON = {
    # audit.credentials.PasswordCheck.code of a locked account or address
    "check.code": {"account_locked", "address_throttled"},
    # a consent refusal re-raised after its UPLOAD_REFUSED event (imaging.services.scan_uploads)
    "code": {"consent_missing", "consent_withdrawn"},
}


def _project_files():
    for app in APPS:
        yield from sorted((ROOT / app).rglob("*.py"))


def _raised_codes() -> list[tuple[str, str, str]]:
    """(kind, code, where) for every RuleViolation in the project: kind is "literal",
    "suffix" (the literal tail of an f-string code) or "passed" (an expression)."""
    found = []
    for path in _project_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            arg = None
            if name in ("RuleViolation", "StreamPositionViolation") and node.args:
                arg = node.args[0]
            else:  # a helper that raises a code given by keyword (imaging's _refuse_upload)
                arg = next((k.value for k in node.keywords if k.arg == "code"), None)
                if name != "_refuse_upload" or arg is None:
                    continue
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append(("literal", arg.value, where))
            elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[-1], ast.Constant):
                found.append(("suffix", str(arg.values[-1].value), where))
            else:
                found.append(("passed", ast.unparse(arg), where))
    return found


def test_the_scan_finds_the_codes():
    found = _raised_codes()
    assert len(found) > 150
    assert ("literal", "consent_missing") in {(kind, code) for kind, code, _ in found}


def test_every_code_raised_has_a_status_or_is_a_conflict():
    unplaced = []
    for kind, code, where in _raised_codes():
        if kind == "literal":
            placed = code in STATUS_BY_CODE or code in CONFLICTS or code.endswith(tuple(STATUS_BY_CODE_SUFFIX))
        elif kind == "suffix":
            placed = code in STATUS_BY_CODE_SUFFIX or code in CONFLICT_SUFFIXES
        elif code in ("exc.code",):  # re-raised as it came: placed where it was made
            placed = True
        else:
            placed = code in PASSED_ON
        if not placed:
            unplaced.append(f"{where}: {code}")
    assert not unplaced, "add each to config.api_errors.STATUS_BY_CODE, or to CONFLICTS here:\n" + "\n".join(unplaced)


def test_the_conflicts_are_answered_409_and_the_table_says_otherwise():
    assert all(status_for(code) == RULE_DEFAULT_STATUS == 409 for code in CONFLICTS)
    assert not CONFLICTS & set(STATUS_BY_CODE)
    assert all(status != 409 for status in STATUS_BY_CODE.values())
    assert all(status_for(code) == 429 for code in PASSED_ON["check.code"])
    assert all(status_for(code) == 409 for code in PASSED_ON["code"])


@pytest.mark.parametrize(
    "code, status",
    [
        ("enrolment_date_in_future", 400),
        ("cell_count_not_positive", 400),
        ("verified_by_not_at_site", 409),
        ("no_change", 400),
        ("status_unchanged", 409),
        ("upload_terminated", 404),
        ("upload_closed", 409),
        ("scope_not_issuable", 400),
        ("scope_not_allowed", 403),
        ("checksum_mismatch", 460),
        ("a_code_nobody_listed", 409),
    ],
)
def test_status_for(code, status):
    assert status_for(code) == status


def test_no_module_outside_the_api_layer_names_a_status_for_a_rule():
    offenders = []
    for path in _project_files():
        for node in ast.walk(ast.parse(path.read_text())):
            raising = getattr(node.func, "id", getattr(node.func, "attr", None)) if isinstance(node, ast.Call) else None
            if raising in ("RuleViolation", "_refuse_upload") and any(
                k.arg in ("status", "status_code", "http_status") for k in node.keywords
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders
    with pytest.raises(TypeError):
        RuleViolation("forbidden", "No.", status_code=403)  # the point: no status in a rule
