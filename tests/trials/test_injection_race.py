"""Two coordinators inject from the same batch at the same moment: the batch row lock
makes "cells remaining" exact, so exactly one of two over-subscribing injections lands."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from audit.actions import AuditAction
from audit.chain import verify_chain
from audit.models import AuditEvent
from config.errors import RuleViolation
from tests.services import require_postgres
from trials.models import Injection

from .test_injection_record import _inject


@pytest.mark.django_db(transaction=True)
def test_it_never_oversubscribes_a_batch_under_concurrent_injections(ready, coordinator_a, investigator_a):
    require_postgres()
    subject, _, batch = ready
    cells_each = batch.cell_count * 6 // 10  # two of these do not fit
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def inject():
        try:
            barrier.wait()
            outcomes.append(
                _inject(coordinator_a, subject, batch, by=investigator_a, verifier=coordinator_a, cells=cells_each)
            )
        except RuleViolation as exc:
            outcomes.append(exc.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=inject) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(o if isinstance(o, str) else "ok" for o in outcomes) == ["insufficient_cells", "ok"]
    assert Injection.objects.filter(batch=batch).count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.INJECTION_RECORDED).count() == 1
    assert verify_chain().ok
