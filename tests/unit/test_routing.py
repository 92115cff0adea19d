"""A/B assignment: stable, sticky, and the realised split matches the weights."""

from __future__ import annotations

import math

import pytest

from serve.routing import assign, bucket


@pytest.mark.parametrize("control, treatment", [(0.5, 0.5), (0.9, 0.1)])
def test_realised_split_over_10000_keys_matches_the_weights(control, treatment):
    keys = [f"user-{i}" for i in range(10_000)]
    share = sum(assign(k, {"control": control, "treatment": treatment}, "churn") == "treatment"
                for k in keys) / len(keys)
    sigma = math.sqrt(treatment * control / len(keys))
    assert abs(share - treatment) < 4 * sigma, (share, treatment)


def test_the_same_key_always_gets_the_same_variant():
    weights = {"control": 0.5, "treatment": 0.5}
    first = [assign(f"u{i}", weights, "churn") for i in range(1000)]
    assert first == [assign(f"u{i}", weights, "churn") for i in range(1000)]


def test_growing_the_treatment_only_moves_users_into_it():
    keys = [f"u{i}" for i in range(5000)]
    small = {k for k in keys if assign(k, {"control": 0.9, "treatment": 0.1}, "s") == "treatment"}
    large = {k for k in keys if assign(k, {"control": 0.5, "treatment": 0.5}, "s") == "treatment"}
    assert small <= large


def test_no_treatment_weight_means_control():
    assert {assign(f"u{i}", {"control": 1.0, "treatment": 0.0}, "s") for i in range(100)} == {"control"}


def test_buckets_are_uniform_and_salted():
    values = [bucket(f"k{i}", "a") for i in range(20_000)]
    assert all(0 <= v < 1 for v in values)
    deciles = [sum(int(v * 10) == d for v in values) for d in range(10)]
    assert max(deciles) - min(deciles) < 400
    assert bucket("k1", "a") != bucket("k1", "b")
