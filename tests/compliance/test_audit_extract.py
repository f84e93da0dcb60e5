from __future__ import annotations

import csv
import io
import json

from compliance.models import Export


def test_it_carries_the_chain_verification_and_head_hash_in_json(built, auditor, trial, visit, coordinator_a):
    from trials.services.subjects import subject_change_status

    subject_change_status(
        actor=coordinator_a, subject=visit, status="completed", reason="follow-up visits done", confirm=True
    )
    _, content = built(auditor, Export.Kind.AUDIT_JSON, trial)
    body = json.loads(content)
    assert body["chain_verification"]["ok"] is True
    assert len(body["head_hash"]) == 64 and body["head_sequence"] >= 1
    [change] = [e for e in body["events"] if e["action_name"] == "SUBJECT_STATUS_CHANGED"]
    assert change["changes"] == {"status": ["enrolled", "completed"]} and change["reason"] == "follow-up visits done"
    assert all(e["trial_id"] == trial.pk for e in body["events"])


def test_it_carries_the_chain_verification_and_head_hash_in_csv(built, auditor, trial, visit):
    _, content = built(auditor, Export.Kind.AUDIT_CSV, trial)
    text = content.decode()
    preamble = [line for line in text.splitlines() if line.startswith("# ")]
    assert any("chain_ok: true" in line for line in preamble)
    assert any("head_hash: " in line for line in preamble)
    rows = list(csv.DictReader(io.StringIO("\n".join(line for line in text.splitlines() if not line.startswith("# ")))))
    assert {r["action_name"] for r in rows} >= {"EXPORT_REQUESTED"}
    assert all(len(r["hash"]) == 64 for r in rows)
