"""The contract every registered feature step keeps, in the spirit of scikit-learn's
check_estimator. It runs over every method in the registry (a method registered later is picked
up with no change here), with each option set the step lists in `examples` and each column kind
it reads: frame and record paths bit-identical, JSON round trip, unseen values at transform
time, an all-null column at fit time, describe() before and after fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pipeline.features import FeatureError, FeaturePipeline
from pipeline.features.steps import Option, Registry, Step, registry
from pipeline.features.values import BOOLEAN, CATEGORICAL, NUMERIC
from pipeline.spec import Transformation

N = 80


def column(kind: str, part: str) -> list:
    """Raw values of the column under test. The test part holds values training never saw."""
    if part == "all_null":
        return [None] * N
    rng = np.random.default_rng({"train": 1, "test": 2}[part])
    if kind == NUMERIC:
        values = list(np.round(rng.normal(0.5, 2.0, N), 1))
        values[::9] = [None] * len(values[::9])
        values[3::11] = [2.0] * len(values[3::11])
        if part == "test":
            values[:6] = [1e6, -1e6, math.inf, -math.inf, 0.0, 123.25]
        return values
    if kind == CATEGORICAL:
        values = list(rng.choice(np.array(["a", "b", "c", 2, None], dtype=object), N))
        if part == "test":
            values[:5] = ["zzz", 2.0, "2", 7, None]
        return values
    if kind == BOOLEAN:
        values = list(rng.choice(np.array([True, False, None], dtype=object), N))
        if part == "test":
            values[:4] = ["yes", 0, 1.0, "F"]
        return values
    raise AssertionError(kind)


def frame(kind: str, part: str) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    values = column(kind, part)
    x = pd.Series(values, dtype=np.float64 if kind == NUMERIC else object)
    return pd.DataFrame({"x": x, "y": rng.normal(10, 1, N)})


def records(df: pd.DataFrame) -> list[dict]:
    def plain(v):
        v = v.item() if isinstance(v, np.generic) else v
        return None if isinstance(v, float) and math.isnan(v) else v
    return [{k: plain(v) for k, v in row.items()} for row in df.to_dict("records")]


def build(method: str, options: dict, kind: str):
    """A pipeline around the step (None when the step refuses this kind with these options)."""
    cls = registry.step_class(method)
    kinds = {"x": kind, "y": "numeric"}
    if not cls.in_spec:  # a step only the pipeline adds: it must add it for this kind
        p = FeaturePipeline.from_spec([], ["x", "y"], kinds)
        assert method in [s["method"] for s in p.to_dict()["steps"]], (
            f"{method} is not in the spec, so from_spec must add it for a {kind} column")
        return p
    t = Transformation(name="t", columns=["x"], method=method, **options)
    try:
        return FeaturePipeline.from_spec([t], ["x", "y"], kinds)
    except FeatureError as exc:
        assert exc.transformation == "t" and exc.column == "x", exc
        return None


# Every (method, example options, kind it reads) the step does not refuse; that each kind has
# one is test_every_kind_a_step_reads_has_a_working_example's.
CASES = [pytest.param((method, dict(options), kind), id=f"{method}-{i}-{kind}")
         for method in registry.methods()
         for i, options in enumerate(registry.step_class(method).examples)
         for kind in sorted(registry.step_class(method).accepts)
         if build(method, dict(options), kind) is not None]


@pytest.fixture(params=CASES)
def case(request):
    method, options, kind = request.param
    return method, kind, build(method, options, kind)


def assert_paths_agree(p: FeaturePipeline, df: pd.DataFrame) -> np.ndarray:
    p.reset_stats()
    from_frame = p.transform(df).to_numpy()
    frame_stats = json.loads(json.dumps(p.stats))
    p.reset_stats()
    from_records = p.transform_records(records(df))
    assert from_records.dtype == np.float64 and from_records.shape == (len(df), len(p.output_columns))
    assert np.array_equal(from_frame, from_records)                   # exact, not allclose
    assert np.isfinite(from_records).all()
    assert p.stats == frame_stats
    singles = np.vstack([p.transform_records(r) for r in records(df)[:10]])
    assert np.array_equal(singles, from_records[:10])
    return from_records


def plain_json(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_json(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


# --------------------------------------------------------------------------- the contract

def test_frame_and_records_are_bit_identical(case):
    _, kind, p = case
    p.fit(frame(kind, "train"))
    assert_paths_agree(p, frame(kind, "train"))
    assert_paths_agree(p, frame(kind, "test"))


def test_json_round_trip(case):
    _, kind, p = case
    unfitted = json.loads(json.dumps(p.to_dict(), allow_nan=False))
    assert FeaturePipeline.from_dict(unfitted) == p and not FeaturePipeline.from_dict(unfitted).is_fitted
    p.fit(frame(kind, "train"))
    state = p.to_dict()
    assert plain_json(state)
    again = FeaturePipeline.from_dict(json.loads(json.dumps(state, allow_nan=False)))
    assert again == p and again.to_dict() == state
    test = frame(kind, "test")
    assert np.array_equal(again.transform(test).to_numpy(), p.transform(test).to_numpy())
    assert np.array_equal(again.transform_records(records(test)), p.transform_records(records(test)))


def test_unseen_values_at_transform_time(case):
    method, kind, p = case
    p.fit(frame(kind, "train"))
    test = frame(kind, "test")
    out = assert_paths_agree(p, test)
    known = p.known_categories()
    if "unknown_categories" in registry.step_class(method).counts and kind == CATEGORICAL:
        assert "zzz" not in known["x"] and p.stats["unknown_categories"]["x"] >= 1
    assert out.shape[1] == len(p.output_columns)


def test_all_null_column_at_fit_time(case):
    _, kind, p = case
    p.fit(frame(kind, "all_null"))
    for part in ("all_null", "train", "test"):
        assert_paths_agree(p, frame(kind, part))
    again = FeaturePipeline.from_dict(json.loads(json.dumps(p.to_dict(), allow_nan=False)))
    assert np.array_equal(again.transform(frame(kind, "test")).to_numpy(),
                          p.transform(frame(kind, "test")).to_numpy())


def test_describe_before_and_after_fit(case):
    method, kind, p = case
    for fitted in (False, True):
        if fitted:
            p.fit(frame(kind, "train"))
        rows = [r for r in p.describe() if r["columns"].split(", ").count("x")]
        assert rows and all(isinstance(r["params"], str) and isinstance(r["method"], str)
                            for r in p.describe())
        assert any(r["method"].split(" ")[0] == method for r in rows)


def test_fit_is_deterministic_and_leaves_the_input_alone(case):
    _, kind, p = case
    train = frame(kind, "train")
    before = train.copy()
    first = p.fit(train).to_dict()
    pd.testing.assert_frame_equal(train, before)
    assert p.fit(train.copy()).to_dict() == first


def test_output_names_and_counters(case):
    method, kind, p = case
    p.fit(frame(kind, "train"))
    steps = p._steps
    i, step = next((i, s) for i, s in enumerate(steps) if s.method == method and "x" in s.columns)
    names = step.output_names("x")
    assert names and all(isinstance(n, str) for n in names)
    if not any(set(names) & set(later.columns) for later in steps[i + 1:]):
        outputs = p.output_columns                     # nothing reads them again: they are output
        at = outputs.index(names[0])
        assert outputs[at:at + len(names)] == names    # contiguous, in order
    for key in step.counts:
        assert p.stats[key]["x"] == 0


# --------------------------------------------------------------------------- the registry

@pytest.mark.parametrize("method", registry.methods())
def test_every_kind_a_step_reads_has_a_working_example(method):
    cls = registry.step_class(method)
    assert cls.examples, f"{method} lists no examples for this contract test"
    for kind in cls.accepts:
        built = [build(method, dict(o), kind) for o in cls.examples]
        assert any(p is not None for p in built), f"no example of {method} reads {kind} columns"


@pytest.mark.parametrize("method", registry.methods())
def test_the_spec_knows_every_registered_method(method):
    cls = registry.step_class(method)
    enum = Transformation.model_json_schema()["properties"]["method"]["anyOf"][0]["enum"]
    assert (method in enum) == cls.in_spec
    for alias in cls.aliases:
        options = dict(cls.examples[0])
        assert Transformation(name="t", columns=["x"], method=alias, **options).method == method
    for option in cls.options:
        assert option.key in Transformation.model_fields


def test_registry_refuses_clashes():
    reg = Registry()
    shared = Option("level", int)

    class A(Step):
        method = "a"
        aliases = ("alpha",)
        options = (shared,)

    reg.register(A)
    for attrs in ({"method": "a"}, {"method": "b", "aliases": ("alpha",)},
                  {"method": "c", "options": (Option("level", int),)},
                  {"method": "d", "options": (Option("columns", list),)}, {"method": ""}):
        with pytest.raises((ValueError, TypeError)):
            reg.register(type("X", (Step,), attrs))
    reg.register(type("Y", (Step,), {"method": "y", "options": (shared,)}))  # shared object: fine
    assert reg.methods() == ("a", "y") and reg.aliases() == {"alpha": "a"}
    assert [o.key for o in reg.spec_options()] == ["level"]


def test_registry_lists_what_the_pipeline_and_spec_read():
    assert registry.methods(spec_only=True) == (
        "standard_scaler", "min_max_scaler", "one_hot", "ordinal", "impute", "log", "clip",
        *[m for m in registry.methods(spec_only=True)[7:]])
    assert "boolean" in registry.methods() and "boolean" not in registry.methods(spec_only=True)
    assert set(registry.encoders()) >= {"one_hot", "ordinal"}
    assert {"unknown_categories", "nulls_imputed", "negative_log_inputs"} <= set(registry.counters())


def test_known_categories_match_the_fitted_state():
    df = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 3 + ["c", "d"], "o": ["x", "y"] * 5,
                       "n": [1.0, 2.0] * 5})
    p = FeaturePipeline.from_spec(
        [Transformation(name="oh", columns=["c"], method="one_hot", max_categories=2),
         Transformation(name="ord", columns=["o"], method="ordinal")],
        ["c", "o", "n"], {"c": "categorical", "o": "categorical", "n": "numeric"})
    assert p.known_categories() == {}
    p.fit(df)
    assert p.known_categories() == {"c": {"a", "b", "c", "d"}, "o": {"x", "y"}}


def test_a_dict_reads_as_the_spec_reads_it():
    kinds = {"x": "numeric", "c": "categorical"}
    as_spec = FeaturePipeline.from_spec(
        [Transformation(name="i", columns=["x"], method="imputer"),
         Transformation(name="o", columns=["c"], method="onehot", max_categories=3),
         Transformation(name="d", derived=[{"name": "r", "formula": "x * 2"}])], ["x", "c"], kinds)
    as_dict = FeaturePipeline.from_spec(
        [{"name": "i", "columns": ["x"], "method": "imputer"},
         {"name": "o", "columns": ["c"], "method": "onehot", "max_categories": 3},
         {"name": "d", "derived": [{"name": "r", "formula": "x * 2"}]}], ["x", "c"], kinds)
    assert as_dict == as_spec
    assert as_dict.to_dict()["steps"][0]["options"] == {"strategy": "median", "fill_value": None}
    for bad, message in (({"name": "t", "columns": ["x"], "method": "log", "stratgy": "mean"}, "unknown key"),
                         ({"name": "t", "columns": ["x"], "method": "bogus"}, "method 'bogus'"),
                         ({"name": "t", "columns": ["x"], "method": "clip"}, "clip needs lower"),
                         ({"name": "t", "columns": ["x"]}, "needs method and columns")):
        with pytest.raises(FeatureError, match=message) as info:
            FeaturePipeline.from_spec([bad], ["x"], kinds)
        assert info.value.transformation == "t"
