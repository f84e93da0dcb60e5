"""Every audit action has a writer: an action no code records tells a reader that a change
is audited when it is not (issue #13: TRIAL_UPDATED, SITE_UPDATED and MEMBERSHIP_REVOKED
were named and never written). Their numbers stay retired, never given to a new action."""

from __future__ import annotations

import re
from pathlib import Path

from audit.actions import RETIRED_NUMBERS, AuditAction

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = {"tests", "migrations", ".venv", "node_modules", "var", "docs"}


def _project_sources() -> str:
    texts = []
    for path in ROOT.rglob("*.py"):
        parts = set(path.relative_to(ROOT).parts)
        if parts & SKIPPED or path.name == "actions.py":
            continue
        texts.append(path.read_text(encoding="utf-8"))
    return "\n".join(texts)


def test_every_audit_action_is_written_by_the_project():
    sources = _project_sources()
    unwritten = [a.name for a in AuditAction if not re.search(rf"\bAuditAction\.{a.name}\b", sources)]
    assert unwritten == []


def test_no_action_takes_a_retired_number():
    assert {101, 111, 121} == RETIRED_NUMBERS
    assert not RETIRED_NUMBERS & {a.value for a in AuditAction}
