"""A reconstruction plan with a bad value is refused at construction, naming
the field and the value, and nothing about the plan survives."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from recon.params import ReconParams

REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"solver": "art"}, "solver must be one of ('kaczmarz', 'cgnr', 'fista', 'fast'), got 'art'"),
    ({"lambda_": -1.0}, "lambda_ must be a finite number >= 0, got -1.0"),
    ({"lambda_": float("nan")}, "lambda_ must be a finite number >= 0, got nan"),
    ({"lambda_": "0.1"}, "lambda_ must be a finite number >= 0, got '0.1'"),
    ({"iterations": 0}, "iterations must be an integer >= 1, got 0"),
    ({"iterations": 2.5}, "iterations must be an integer >= 1, got 2.5"),
    ({"snr_threshold": -0.1}, "snr_threshold must be >= 0, got -0.1"),
    ({"snr_threshold": float("inf")}, "snr_threshold must be >= 0, got inf"),
    ({"min_freq_hz": -1.0}, "min_freq_hz must be >= 0, got -1.0"),
    ({"max_freq_hz": 80e3}, "max_freq_hz (80000.0) must exceed min_freq_hz (80000.0)"),
    ({"max_rows": 0}, "max_rows must be None or an integer >= 1, got 0"),
    ({"max_rows": 10.5}, "max_rows must be None or an integer >= 1, got 10.5"),
    ({"memory_budget_bytes": 0}, "memory_budget_bytes must be None or an integer >= 1, got 0"),
    ({"memory_budget_bytes": 1.5}, "memory_budget_bytes must be None or an integer >= 1, got 1.5"),
    ({"channels": ()}, "channels must be None or non-empty 0-based indices, got ()"),
    ({"channels": (0, -1)}, "channels must be None or non-empty 0-based indices, got (0, -1)"),
    ({"frames": (0, 1, 2)}, "frames must be (start, stop) with 0 <= start < stop, got (0, 1, 2)"),
    ({"frames": (-1, 3)}, "frames must be (start, stop) with 0 <= start < stop, got (-1, 3)"),
    ({"frames": (4, 4)}, "frames must be (start, stop) with 0 <= start < stop, got (4, 4)"),
    ({"average": 0}, "average must be an integer >= 1, got 0"),
    ({"average": 1.5}, "average must be an integer >= 1, got 1.5"),
    ({"background": ""}, "background must be ('mean', 'interpolate', 'none') or a file path, got ''"),
    ({"background": None}, "background must be ('mean', 'interpolate', 'none') or a file path, got None"),
    ({"weighting": "snr"}, "weighting must be one of ('none', 'row_norm', 'whiten'), got 'snr'"),
    ({"real": False}, "real=False is not supported: iron concentration is real valued"),
    ({"fista_penalty": "l2"}, "fista_penalty must be one of ('tv', 'l1'), got 'l2'"),
    ({"fista_weight": -1e-3}, "fista_weight must be >= 0, got -0.001"),
    ({"fista_weight": float("nan")}, "fista_weight must be >= 0, got nan"),
    ({"tv_inner_iterations": 0}, "tv_inner_iterations must be >= 1, got 0"),
    ({"dtype": "float16"}, "dtype must be one of ('float32', 'float64'), got 'float16'"),
]


@pytest.mark.parametrize("change, message", REFUSALS, ids=[f"{k}={v!r}" for c, _ in REFUSALS for k, v in c.items()])
def test_it_refuses_a_bad_value_naming_it(change, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        ReconParams(**change)


@pytest.mark.parametrize("change, message", REFUSALS[:3])
def test_replace_validates_the_changed_plan(change, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        ReconParams().replace(**change)


def test_boundary_values_are_accepted():
    p = ReconParams(
        lambda_=0,
        snr_threshold=0.0,
        min_freq_hz=0.0,
        max_freq_hz=1.0,
        max_rows=1,
        memory_budget_bytes=1,
        channels=[0],
        frames=[0, 1],
        fista_weight=0.0,
        tv_inner_iterations=1,
    )
    assert p.channels == (0,) and p.frames == (0, 1)
    assert ReconParams.from_json(p.to_json()) == p


def test_it_refuses_a_plan_that_is_not_a_json_object():
    with pytest.raises(ValueError, match=r"^reconstruction parameters must be a JSON object, got list$"):
        ReconParams.from_json(json.dumps([1, 2]))


def test_it_refuses_unknown_keys_listing_them_sorted():
    with pytest.raises(ValueError, match=re.escape("unknown reconstruction parameters: ['alpha', 'zeta']")):
        ReconParams.from_dict({"zeta": 1, "alpha": 2, "solver": "cgnr"})


def test_background_is_external_only_for_a_path():
    assert not ReconParams(background="mean").background_is_external
    assert ReconParams(background="/data/empty_bore.mdf").background_is_external
