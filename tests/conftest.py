"""The fixed cast, shared by every test.

One trial, MPI-CT-T01, with site A (Berlin) and site B (Boston):

    coordinator_a, imaging_a, investigator_a   at site A
    coordinator_b                               at site B
    monitor, sponsor, auditor                   trial-wide
    trial_manager                               trial-wide: the trial's shared resources
                                                (nanoparticle lots, consent documents)
"""

from __future__ import annotations

import contextlib

import pytest
from django.apps import apps
from rest_framework.test import APIClient

from audit.models import AuditEvent
from tests import factories as f
from trials.models import Role


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    # Uploaded consent documents and certificates land in a throwaway folder.
    settings.MEDIA_ROOT = tmp_path / "media"
    # Each test's audit checkpoints in its own store: none from another test's chain.
    settings.AUDIT_CHECKPOINT_DIR = tmp_path / "audit-checkpoints"
    # A deliberately slow password hash has nothing to prove here.
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STATIC_ROOT.mkdir()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Live sessions stream through this process's memory unless a test asks for Redis
    # (tests/live/test_transport.py); each test starts with empty streams.
    from live.transport import reset_transport

    settings.LIVE_TRANSPORT = "memory"
    reset_transport()


@pytest.fixture
def trial(db):
    return f.TrialFactory(protocol_number="MPI-CT-T01")


@pytest.fixture
def site_a(trial):
    return f.SiteFactory(trial=trial, code="A", name="Charité Berlin", time_zone="Europe/Berlin")


@pytest.fixture
def site_b(trial):
    return f.SiteFactory(trial=trial, code="B", name="MGH Boston", time_zone="America/New_York")


def _member(username, role, *, site=None, trial=None):
    user = f.UserFactory(username=username)
    f.MembershipFactory(user=user, site=site, trial=trial or site.trial, role=role)
    return user


@pytest.fixture
def coordinator_a(site_a):
    return _member("coordinator_a", Role.COORDINATOR, site=site_a)


@pytest.fixture
def imaging_a(site_a):
    return _member("imaging_a", Role.IMAGING_STAFF, site=site_a)


@pytest.fixture
def investigator_a(site_a):
    return _member("investigator_a", Role.INVESTIGATOR, site=site_a)


@pytest.fixture
def coordinator_b(site_b):
    return _member("coordinator_b", Role.COORDINATOR, site=site_b)


@pytest.fixture
def investigator_b(site_b):
    return _member("investigator_b", Role.INVESTIGATOR, site=site_b)


@pytest.fixture
def monitor(trial):
    return _member("monitor", Role.MONITOR, trial=trial)


@pytest.fixture
def sponsor(trial):
    return _member("sponsor", Role.SPONSOR, trial=trial)


@pytest.fixture
def auditor(trial):
    return _member("auditor", Role.AUDITOR, trial=trial)


@pytest.fixture
def trial_manager(trial):
    return _member("trial_manager", Role.TRIAL_MANAGER, trial=trial)


@pytest.fixture
def api():
    """``api(user)`` -> an APIClient authenticated as ``user``."""

    def make(user=None):
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


def _row_counts() -> dict[str, int]:
    counted = list(apps.get_app_config("trials").get_models()) + [AuditEvent]
    return {m._meta.label: m._default_manager.count() for m in counted}


@pytest.fixture
def nothing_written():
    """``with nothing_written(): ...`` fails unless every trials table and the audit
    trail have exactly as many rows afterwards as before."""

    @contextlib.contextmanager
    def check():
        before = _row_counts()
        yield
        assert _row_counts() == before

    return check


@pytest.fixture
def ready(site_a, coordinator_a, investigator_a):
    """An enrolled subject at site A with imaging consent and identity, and a labelled,
    released autologous batch of their own cells: everything an injection needs."""
    subject = f.SubjectFactory(site=site_a, code="MPI-CT-T01-A-0001")
    f.SubjectIdentityFactory(subject=subject, full_name="Erika Mustermann", medical_record_number="MRN0042137")
    consent = f.ConsentFactory(subject=subject, obtained_by=coordinator_a)
    batch = f.CellBatchFactory(donor_subject=subject)
    return subject, consent, batch


def last_event() -> AuditEvent | None:
    return AuditEvent.objects.order_by("-sequence").first()
