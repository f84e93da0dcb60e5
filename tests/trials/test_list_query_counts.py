"""A list page costs the same number of queries for 2 rows as for 20."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.trials.api_routes import VISIBLE_TO_MONITOR, list_routes

LIST_ROUTES = list_routes()


@pytest.mark.parametrize("name,basename", LIST_ROUTES, ids=[r[0] for r in LIST_ROUTES])
def test_it_runs_a_constant_number_of_queries_per_page(api, trial, site_a, site_b, monitor, name, basename):
    assert basename in VISIBLE_TO_MONITOR, f"no row factory for {basename!r}: add it to VISIBLE_TO_MONITOR"
    cast = SimpleNamespace(trial=trial, site_a=site_a, site_b=site_b, monitor=monitor)
    client = api(monitor)

    def count_queries(rows_wanted):
        while client.get(reverse(name), {"page_size": 100}).json()["count"] < rows_wanted:
            VISIBLE_TO_MONITOR[basename](cast)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(reverse(name), {"page_size": rows_wanted})
        assert len(response.json()["results"]) == rows_wanted
        return len(queries)

    small, large = count_queries(2), count_queries(20)
    assert small == large, f"{name}: {small} queries for 2 rows, {large} for 20"
    assert large <= 4, f"{name}: {large} queries"
