"""?trial=<id> on exports must not tell which trials exist (found in review)."""

from __future__ import annotations

from tests import factories as f


def test_it_answers_a_filter_by_another_trials_id_as_if_the_id_did_not_exist(api, coordinator_a):
    other = f.TrialFactory()
    client = api(coordinator_a)
    existing = client.get("/api/v1/exports/", {"trial": other.pk})
    missing = client.get("/api/v1/exports/", {"trial": 10**9})
    assert (existing.status_code, existing.json()) == (missing.status_code, missing.json())
    assert existing.status_code == 200
