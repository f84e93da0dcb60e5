"""Retention % and its error bar come from the Measurement rows, computed once at
quantification time against the scan's own injection (issue #13, items 1 and 8).

Found: the subject page drew each point from the stored retention % (the scan's own
injection) but its error bar from the uncertainty divided by the subject's *first*
injection, so with two injections the bar belonged to another dose.
"""

from __future__ import annotations

import datetime as dt

import pytest

from imaging import selectors
from imaging.models import Measurement
from tests import factories as f
from tests.imaging.helpers import process, uploaded_scan
from web import plots


@pytest.fixture
def second_injection_scan(api, pipeline):
    """The subject had an earlier, smaller injection; the scan follows the later one."""
    earlier = f.InjectionFactory(
        batch=pipeline.batch,
        subject=pipeline.subject,
        administered_cells=pipeline.injection.administered_cells // 4,
        administered_at=pipeline.injection.administered_at - dt.timedelta(days=20),
    )
    assert earlier.administered_at < pipeline.injection.administered_at
    return process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))


def test_it_stores_retention_and_its_uncertainty_per_region_against_the_scans_own_injection(second_injection_scan):
    scan = second_injection_scan
    injected = scan.metrics_summary["injected_iron_ng"]  # the scan's own injection
    rows = list(Measurement.objects.filter(scan=scan))
    assert rows
    for m in rows:
        assert m.retention_percent == pytest.approx(100 * m.iron_ng / injected)
        assert m.retention_uncertainty_percent == pytest.approx(100 * m.uncertainty_ng / injected)
    target = [m for m in rows if m.roi_kind == "target"]
    assert scan.metrics_summary["retention_percent"] == pytest.approx(sum(m.retention_percent for m in target))


def test_the_error_bar_and_the_point_of_the_subject_page_agree(second_injection_scan):
    scan = second_injection_scan
    retention, _ = plots.plot_data(selectors.time_course(scan.subject))
    drawn = {s["name"]: s["points"] for s in retention}
    targets = Measurement.objects.filter(scan=scan, roi_kind="target")
    assert targets and set(drawn) == {m.roi_name for m in targets}
    for m in targets:
        (point,) = drawn[m.roi_name]
        # The point and its bar are relative to the same dose: the scan's own injection ...
        assert point["sd_percent"] / point["percent"] == pytest.approx(m.uncertainty_ng / m.iron_ng)
        # ... because both are read from the row; neither is recomputed in the plot.
        assert point["percent"] == m.retention_percent
        assert point["sd_percent"] == m.retention_uncertainty_percent


def test_the_migration_fills_the_uncertainty_of_rows_quantified_before_it(db):
    import importlib

    from django.apps import apps

    from tests.imaging.factories import MeasurementFactory

    migration = importlib.import_module("imaging.migrations.0005_rules_measurement_retention_uncertainty")
    old = MeasurementFactory(
        iron_ng=1000.0, uncertainty_ng=50.0, retention_percent=40.0, retention_uncertainty_percent=None
    )  # injected 2500 ng
    no_iron = MeasurementFactory(
        iron_ng=0.0, uncertainty_ng=50.0, retention_percent=0.0, retention_uncertainty_percent=None
    )
    no_iron.scan.metrics_summary = {"injected_iron_ng": 5000.0}
    no_iron.scan.save()
    migration.fill_retention_uncertainty(apps, None)
    old.refresh_from_db()
    no_iron.refresh_from_db()
    assert old.retention_uncertainty_percent == pytest.approx(100 * 50.0 / 2500.0)
    assert no_iron.retention_uncertainty_percent == pytest.approx(100 * 50.0 / 5000.0)
