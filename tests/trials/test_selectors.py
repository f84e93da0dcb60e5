from __future__ import annotations

import pytest

from tests import factories as f
from trials.models import Membership
from trials.selectors import batches_visible_to, subjects_visible_to, visible_sites, visible_trials


@pytest.fixture
def subjects(site_a, site_b):
    # With data-sharing consent: a sponsor reads only such subjects (tests/compliance/test_sponsor_*).
    subjects = f.SubjectFactory(site=site_a), f.SubjectFactory(site=site_b)
    for subject in subjects:
        f.ConsentFactory(subject=subject)
    return subjects


@pytest.mark.parametrize(
    "who,sites",
    [
        ("coordinator_a", {"A"}),
        ("imaging_a", {"A"}),
        ("coordinator_b", {"B"}),
        ("monitor", {"A", "B"}),
        ("sponsor", {"A", "B"}),
        ("auditor", {"A", "B"}),
    ],
)
def test_it_scopes_sites_and_subjects_by_membership(request, subjects, who, sites):
    user = request.getfixturevalue(who)
    assert {s.code for s in visible_sites(user)} == sites
    assert {s.site.code for s in subjects_visible_to(user)} == sites


def test_it_shows_nothing_after_the_membership_is_deactivated(subjects, coordinator_a):
    Membership.objects.filter(user=coordinator_a).update(active=False)
    assert not subjects_visible_to(coordinator_a).exists()
    assert not visible_trials(coordinator_a).exists()


def test_it_shows_nothing_of_another_trial(subjects, coordinator_a):
    f.SubjectFactory()  # a subject of an unrelated trial
    assert subjects_visible_to(coordinator_a).count() == 1
    assert list(visible_trials(coordinator_a)) == [subjects[0].trial]


def test_it_annotates_cells_remaining_on_batches(site_a, coordinator_a):
    batch = f.CellBatchFactory(donor_subject=f.SubjectFactory(site=site_a), cell_count=50_000_000)
    f.InjectionFactory(batch=batch, administered_cells=12_000_000)
    f.InjectionFactory(batch=batch, administered_cells=8_000_000)
    untouched = f.CellBatchFactory(donor_subject=None, site=site_a, cell_count=7)

    rows = {b.pk: b for b in batches_visible_to(coordinator_a)}
    assert (rows[batch.pk].cells_injected, rows[batch.pk].cells_remaining) == (20_000_000, 30_000_000)
    assert rows[untouched.pk].cells_remaining == 7
