"""Issue #13: imports point down (web -> compliance -> live -> imaging -> trials -> audit).
The services of trials and imaging import nothing above them (nothing of compliance: the
audit trail, actions, request context and credentials are the bottom ``audit`` app's).
A signed record's invalidation, the one rule above that must run when trial data
changes, is reached through the audit layer's change observers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.db import transaction

from audit import chain as audit
from audit.chain import AuditError, record_change, register_change_observer
from compliance import signatures

ROOT = Path(__file__).resolve().parents[2]
ABOVE = {
    "trials": ("compliance", "imaging", "live", "web"),
    "imaging": ("compliance", "live", "web"),
}


def _imports(package: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
        found[path.name] = names
    return found


@pytest.mark.parametrize("app", ["trials", "imaging"])
def test_the_services_import_nothing_above_them(app):
    imports = _imports(ROOT / app / "services")
    assert len(imports) >= 5
    upward = {
        f"{module}: {name}"
        for module, names in imports.items()
        for name in names
        if name.split(".")[0] in ABOVE[app] or name.startswith(f"{app}.tasks")
    }
    assert not upward


def test_record_change_calls_each_observer_once_in_the_transaction(transactional_db, monkeypatch):
    monkeypatch.setattr(audit, "_change_observers", [])
    seen = []

    def observer(obj, *, actor, reason):
        seen.append((obj, actor, reason, transaction.get_connection().in_atomic_block))

    register_change_observer(observer)
    register_change_observer(observer)
    with transaction.atomic():
        record_change("visit", actor="alice", reason="corrected: typo")
    assert seen == [("visit", "alice", "corrected: typo", True)]


def test_record_change_refuses_outside_a_transaction(transactional_db, monkeypatch):
    seen = []
    monkeypatch.setattr(audit, "_change_observers", [lambda obj, **kw: seen.append(obj)])
    with pytest.raises(AuditError):
        record_change("visit", actor=None, reason="x")
    assert seen == []


def test_compliance_registers_the_signature_rule():
    assert audit._change_observers.count(signatures.signature_invalidate_if_changed) == 1
