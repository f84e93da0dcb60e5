"""Scan rows for the list-page tests, written directly (no file, no pipeline): the list
shows what the rows say and must not look anything up per row."""

from __future__ import annotations

import uuid
from typing import cast

from imaging.models import Scan, Scanner
from tests import factories as f
from trials.models import Injection


def scanner_at(site) -> Scanner:
    return Scanner.objects.get_or_create(
        site=site,
        name="bench",
        defaults=dict(
            manufacturer="Bruker",
            model="MPI 25/20 FF",
            base_frequency_hz=2.5e6,
            dividers=[102, 96, 99],
            drive_amplitudes_t=[0.012, 0.012, 0.012],
            gradient_t_per_m=[-1, -1, 2],
        ),
    )[0]


def scans_at(site, n: int, *, status: str = Scan.Status.QUANTIFIED, hours: float = 24.0, **fields) -> list[Scan]:
    scanner = scanner_at(site)
    made = []
    for _ in range(n):
        injection = cast(Injection, f.InjectionFactory(subject=f.SubjectFactory(site=site)))
        made.append(
            Scan.objects.create(
                subject=injection.subject,
                injection=injection,
                scanner=scanner,
                hours_after_injection=hours,
                filename="scan.mdf",
                file="imaging/scans/none.mdf",
                size_bytes=1,
                sha256=uuid.uuid4().hex * 2,
                status=status,
                metrics_summary={"retention_percent": 61.5, "off_target_percent": 12.0},
                **fields,
            )
        )
    return made
