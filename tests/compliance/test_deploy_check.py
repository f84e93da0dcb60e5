from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "MPI_ENV": "production",
    "SECRET_KEY": "k3Q9-production-secret-key-that-is-long-enough-for-django-checks-x",
    "ALLOWED_HOSTS": "trials.example.org",
    "DATABASE_URL": "postgresql://mpi@db.example.org:5432/mpi_trials",
    "CELERY_BROKER_URL": "redis://redis.example.org:6379/0",
    "AUDIT_HMAC_KEY": "a-production-audit-chain-key-of-at-least-32-bytes-x",
    "AUDIT_CHECKPOINT_DIR": "/srv/audit-checkpoints",
}


def _manage(*args, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DEBUG", "REQUIRE_2FA", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }  # set by the e2e tests
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **PRODUCTION_ENV, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_passes_the_deploy_check_in_production():
    result = _manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_it_refuses_to_switch_two_factor_off_in_production():
    result = _manage("check", REQUIRE_2FA="false")
    assert result.returncode != 0 and "REQUIRE_2FA=false is refused" in result.stderr
