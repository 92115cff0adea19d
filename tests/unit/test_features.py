"""FeaturePipeline: fitted values against numpy/scikit-learn, defaults, counters, the JSON state,
and the record path giving exactly the frame path's numbers."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

from pipeline.features import FeatureError, FeaturePipeline
from pipeline.spec import Transformation


def T(**kw) -> Transformation:
    return Transformation(**kw)


def pipe(transformations, kinds, inputs=None) -> FeaturePipeline:
    return FeaturePipeline.from_spec(transformations, list(inputs or kinds), kinds)


def records_of(df: pd.DataFrame) -> list[dict]:
    """JSON-like records: NaN -> None, numpy scalars -> Python values (full precision)."""
    def plain(v):
        v = v.item() if isinstance(v, np.generic) else v
        return None if isinstance(v, float) and math.isnan(v) else v
    return [{k: plain(v) for k, v in row.items()} for row in df.to_dict("records")]


# --------------------------------------------------------------------------- fixtures

CHURN_KINDS = {
    "tenure_months": "numeric", "monthly_charges": "numeric", "total_charges": "numeric",
    "contract": "categorical", "payment_method": "categorical", "senior": "boolean",
    "region": "categorical",
}
CHURN_STEPS = [
    T(name="normalize_numeric", columns=["tenure_months", "monthly_charges"],
      method="standard_scaler"),
    T(name="encode_categorical", columns=["contract", "payment_method"], method="one_hot"),
    T(name="create_features", derived=[
        {"name": "charges_per_month", "formula": "total_charges / tenure_months"}]),
]


def churn_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n).astype(float)
    tenure[rng.random(n) < 0.05] = np.nan
    monthly = rng.normal(70, 20, n)
    monthly[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({
        "customer_id": np.arange(n),
        "tenure_months": tenure,
        "monthly_charges": monthly,
        "total_charges": np.round(rng.normal(2000, 600, n), 2),
        "contract": rng.choice(["month_to_month", "one_year", "two_year"], n, p=[.5, .3, .2]),
        "payment_method": rng.choice(["card", "bank", "check", None], n),
        "senior": rng.choice([True, False], n),
        "region": rng.choice(["north", "south", "east"], n),
        "churned": rng.integers(0, 2, n),
    })


@pytest.fixture
def train() -> pd.DataFrame:
    return churn_frame(500, seed=1)


@pytest.fixture
def churn(train) -> FeaturePipeline:
    return pipe(CHURN_STEPS, CHURN_KINDS).fit(train)


# --------------------------------------------------------------------------- each method

def test_standard_scaler_matches_sklearn(train):
    p = pipe([T(name="s", columns=["tenure_months", "monthly_charges"], method="standard_scaler")],
             {"tenure_months": "numeric", "monthly_charges": "numeric"}).fit(train)
    cols = ["tenure_months", "monthly_charges"]
    ref = StandardScaler().fit(train[cols])            # sklearn also ignores NaN when fitting
    fitted = p.to_dict()["steps"][0]["fitted"]
    np.testing.assert_allclose([fitted[c]["mean"] for c in cols], ref.mean_, rtol=1e-12)
    np.testing.assert_allclose([fitted[c]["std"] for c in cols], ref.scale_, rtol=1e-12)
    out = p.transform(train)
    expected = ref.transform(train[cols])
    present = ~np.isnan(expected)
    np.testing.assert_allclose(out[cols].to_numpy()[present], expected[present], rtol=1e-9,
                               atol=1e-12)
    # nulls stay null through the scaler and get the median of the scaled training column
    for j, c in enumerate(cols):
        missing = np.isnan(expected[:, j])
        assert missing.sum() > 0
        assert np.all(out[c].to_numpy()[missing] == np.nanmedian(expected[:, j]))


def test_standard_scaler_constant_and_all_null_columns():
    df = pd.DataFrame({"a": [3.0, 3.0, 3.0], "b": [np.nan, np.nan, np.nan]})
    p = pipe([T(name="s", columns=["a", "b"], method="standard_scaler")],
             {"a": "numeric", "b": "numeric"}).fit(df)
    assert p.to_dict()["steps"][0]["fitted"] == {"a": {"mean": 3.0, "std": 1.0},
                                                  "b": {"mean": 0.0, "std": 1.0}}
    out = p.transform(pd.DataFrame({"a": [5.0], "b": [2.0]}))
    assert out.to_numpy().tolist() == [[2.0, 2.0]]


def test_min_max_scaler_matches_sklearn(train):
    p = pipe([T(name="m", columns=["monthly_charges"], method="min_max_scaler")],
             {"monthly_charges": "numeric"}).fit(train)
    ref = MinMaxScaler().fit(train[["monthly_charges"]])
    fitted = p.to_dict()["steps"][0]["fitted"]["monthly_charges"]
    assert fitted == {"min": float(ref.data_min_[0]), "max": float(ref.data_max_[0])}
    test = churn_frame(50, seed=9)
    got = p.transform(test)["monthly_charges"].to_numpy()
    want = ref.transform(test[["monthly_charges"]])[:, 0]
    present = ~np.isnan(want)
    np.testing.assert_allclose(got[present], want[present], rtol=1e-12, atol=1e-12)
    # values outside the training range are not re-fitted: they land outside [0, 1]
    lo, hi = fitted["min"], fitted["max"]
    edge = p.transform(pd.DataFrame({"monthly_charges": [lo - (hi - lo), hi + (hi - lo)]}))
    np.testing.assert_allclose(edge["monthly_charges"].to_numpy(), [-1.0, 2.0], rtol=1e-12)


def test_robust_scaler_matches_sklearn(train):
    cols = ["tenure_months", "monthly_charges"]
    kinds = {c: "numeric" for c in cols}
    for fit_on in (train.dropna(subset=cols), train):   # without NaN, and NaN ignored as sklearn
        p = pipe([T(name="r", columns=cols, method="robust_scaler")], kinds).fit(fit_on)
        ref = RobustScaler().fit(fit_on[cols])
        fitted = p.to_dict()["steps"][0]["fitted"]
        assert [fitted[c]["center"] for c in cols] == ref.center_.tolist()
        assert [fitted[c]["scale"] for c in cols] == ref.scale_.tolist()
        test = churn_frame(50, seed=9)
        got, want = p.transform(test)[cols].to_numpy(), ref.transform(test[cols])
        present = ~np.isnan(want)
        np.testing.assert_array_equal(got[present], want[present])    # the same arithmetic


def test_robust_scaler_constant_and_all_null_columns():
    df = pd.DataFrame({"a": [3.0, 3.0, 3.0, 3.0, 4.0], "b": [np.nan] * 5})   # IQR 0, not constant
    p = pipe([T(name="r", columns=["a", "b"], method="robust")],
             {"a": "numeric", "b": "numeric"}).fit(df)
    assert p.to_dict()["steps"][0]["fitted"] == {"a": {"center": 3.0, "scale": 1.0},
                                                  "b": {"center": 0.0, "scale": 1.0}}
    assert p.transform(pd.DataFrame({"a": [5.0], "b": [2.0]})).to_numpy().tolist() == [[2.0, 2.0]]
    assert RobustScaler().fit(df[["a"]]).scale_.tolist() == [1.0]


def test_one_hot_sorted_categories_match_get_dummies():
    df = pd.DataFrame({"c": ["b", "a", "c", "a", "b"]})
    p = pipe([T(name="oh", columns=["c"], method="one_hot")], {"c": "categorical"}).fit(df)
    assert p.output_columns == ["c=a", "c=b", "c=c"]
    expected = pd.get_dummies(df["c"], prefix="c", prefix_sep="=", dtype=float)
    assert p.transform(df).equals(expected)
    assert p.to_dict()["steps"][0]["fitted"] == {"c": {"categories": ["a", "b", "c"],
                                                       "null": False, "other": []}}


def test_one_hot_unknown_is_all_zero_and_counted_null_only_if_seen():
    df = pd.DataFrame({"c": ["x", "y", None], "d": ["p", "q", "q"]})
    p = pipe([T(name="oh", columns=["c", "d"], method="one_hot")],
             {"c": "categorical", "d": "categorical"}).fit(df)
    assert p.output_columns == ["c=x", "c=y", "c=__null__", "d=p", "d=q"]
    out = p.transform(pd.DataFrame({"c": ["zzz", None, "x"], "d": ["new", None, "p"]}))
    assert out.to_numpy().tolist() == [
        [0, 0, 0, 0, 0],   # both unknown: all-zero
        [0, 0, 1, 0, 0],   # c null was seen in training -> its own column; d null was not -> zeros
        [1, 0, 0, 1, 0],
    ]
    assert p.stats["unknown_categories"] == {"c": 1, "d": 1}


def test_one_hot_max_categories_keeps_most_frequent():
    df = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"]})
    p = pipe([T(name="oh", columns=["c"], method="one_hot", max_categories=2)],
             {"c": "categorical"}).fit(df)
    # a (5) is kept, b and c tie at 3 and the tie goes to the smaller value
    assert p.output_columns == ["c=a", "c=b", "c=__other__"]
    assert p.to_dict()["steps"][0]["fitted"]["c"]["other"] == ["c", "d"]
    out = p.transform(pd.DataFrame({"c": ["a", "c", "d", "never_seen"]}))
    assert out.to_numpy().tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]]
    assert p.stats["unknown_categories"] == {"c": 1}  # rare training values are not unknown


def test_ordinal_given_order_sorted_default_unknown_and_null():
    df = pd.DataFrame({"size": ["m", "s", "l", "m"], "grade": ["b", "a", "c", None]})
    p = pipe([T(name="ord", columns=["size", "grade"], method="ordinal",
                categories={"size": ["s", "m", "l"]})],
             {"size": "categorical", "grade": "categorical"}).fit(df)
    fitted = p.to_dict()["steps"][0]["fitted"]
    assert fitted == {"size": {"categories": ["s", "m", "l"]},
                      "grade": {"categories": ["a", "b", "c"]}}
    assert p.transform(df)["size"].tolist() == [1.0, 0.0, 2.0, 1.0]
    # grade's null becomes NaN, then the final imputation's training median of [1, 0, 2] = 1
    assert p.transform(df)["grade"].tolist() == [1.0, 0.0, 2.0, 1.0]
    p.reset_stats()
    out = p.transform(pd.DataFrame({"size": ["xl", "s"], "grade": ["a", "z"]}))
    assert out.to_numpy().tolist() == [[-1.0, 0.0], [0.0, -1.0]]
    assert p.stats["unknown_categories"] == {"size": 1, "grade": 1}


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
def test_impute_matches_sklearn(strategy):
    values = np.array([1.0, 2.0, 2.0, np.nan, 10.0, np.nan, 4.0])
    df = pd.DataFrame({"x": values})
    kw = {"fill_value": -7.0} if strategy == "constant" else {}
    p = pipe([T(name="imp", columns=["x"], method="impute", strategy=strategy, **kw)],
             {"x": "numeric"}).fit(df)
    ref = SimpleImputer(strategy=strategy, **kw).fit(values.reshape(-1, 1))
    assert p.to_dict()["steps"][0]["fitted"]["x"]["value"] == pytest.approx(ref.statistics_[0])
    np.testing.assert_allclose(p.transform(df)["x"].to_numpy(),
                               ref.transform(values.reshape(-1, 1))[:, 0])
    assert p.stats["nulls_imputed"]["x"] == 2


def test_impute_categorical_most_frequent_before_auto_one_hot():
    df = pd.DataFrame({"c": ["b", "a", "b", None]})
    p = pipe([T(name="imp", columns=["c"], method="impute", strategy="most_frequent")],
             {"c": "categorical"}).fit(df)
    assert p.output_columns == ["c=a", "c=b"]           # no null column: imputed before encoding
    assert p.transform(df).to_numpy().tolist() == [[0, 1], [1, 0], [0, 1], [0, 1]]
    assert p.stats["nulls_imputed"]["c"] == 1


def test_log_and_negative_values():
    df = pd.DataFrame({"x": [0.0, 1.0, np.e - 1, 3.0]})
    p = pipe([T(name="lg", columns=["x"], method="log")], {"x": "numeric"}).fit(df)
    np.testing.assert_array_equal(p.transform(df)["x"].to_numpy(), np.log1p(df["x"].to_numpy()))
    median = float(np.median(np.log1p(df["x"].to_numpy())))
    out = p.transform(pd.DataFrame({"x": [-5.0, 7.0]}))["x"].tolist()
    assert out == [median, math.log1p(7.0)]              # negative -> null -> training median
    assert p.stats["negative_log_inputs"] == {"x": 1}


def test_clip():
    df = pd.DataFrame({"x": [-10.0, 0.5, 10.0, np.nan]})
    p = pipe([T(name="cl", columns=["x"], method="clip", lower=0, upper=1)],
             {"x": "numeric"}).fit(df)
    assert p.transform(df)["x"].tolist() == [0.0, 0.5, 1.0, 0.5]   # NaN -> median of [0, .5, 1]


def test_steps_run_in_sequence_on_one_column():
    x = np.array([1.0, np.nan, 3.0, 8.0, 100.0])
    df = pd.DataFrame({"x": x})
    p = pipe([T(name="imp", columns=["x"], method="impute", strategy="mean"),
              T(name="cl", columns=["x"], method="clip", upper=20),
              T(name="sc", columns=["x"], method="standard_scaler")], {"x": "numeric"}).fit(df)
    filled = np.where(np.isnan(x), np.nanmean(x), x)
    clipped = np.minimum(filled, 20)
    expected = (clipped - clipped.mean()) / clipped.std()
    np.testing.assert_allclose(p.transform(df)["x"].to_numpy(), expected, rtol=1e-12)
    fitted = {s["name"]: s["fitted"] for s in p.to_dict()["steps"]}
    assert fitted["imp"]["x"]["value"] == pytest.approx(28.0)
    assert fitted["sc"]["x"]["mean"] == pytest.approx(clipped.mean())


# --------------------------------------------------------------------------- fit discipline

def test_fit_uses_only_the_data_given(train):
    test = churn_frame(300, seed=2)
    test["monthly_charges"] += 500                      # a very different split
    before = train.copy()
    a = pipe(CHURN_STEPS, CHURN_KINDS).fit(train)
    a.transform(test)                                   # transforming never refits
    b = pipe(CHURN_STEPS, CHURN_KINDS).fit(train.copy())
    assert a == b and a.to_dict() == b.to_dict()
    pd.testing.assert_frame_equal(train, before)        # the input is not modified
    both = pipe(CHURN_STEPS, CHURN_KINDS).fit(pd.concat([train, test]))
    assert both != a
    fitted = a.to_dict()["steps"][1]["fitted"]["monthly_charges"]
    assert fitted["mean"] == pytest.approx(float(np.nanmean(train["monthly_charges"])))


def test_refit_forgets_previous_fit(train):
    other = churn_frame(200, seed=5)
    p = pipe(CHURN_STEPS, CHURN_KINDS)
    assert p.fit(train) is p and p.is_fitted
    p.fit(other)
    assert p == pipe(CHURN_STEPS, CHURN_KINDS).fit(other)


def test_failed_fit_leaves_pipeline_unchanged(churn, train):
    state = churn.to_dict()
    with pytest.raises(FeatureError):
        churn.fit(train.drop(columns=["region"]))
    assert churn.to_dict() == state and churn.is_fitted


# --------------------------------------------------------------------------- defaults

def test_defaults_auto_one_hot_boolean_and_final_imputation(churn, train):
    assert churn.output_columns == [
        "tenure_months", "monthly_charges", "total_charges",
        "contract=month_to_month", "contract=one_year", "contract=two_year",
        "payment_method=bank", "payment_method=card", "payment_method=check",
        "payment_method=__null__", "senior", "region=east", "region=north", "region=south",
        "charges_per_month"]
    steps = {s["name"]: s for s in churn.to_dict()["steps"]}
    assert steps["auto_boolean"]["columns"] == ["senior"] and steps["auto_boolean"]["auto"]
    assert steps["auto_one_hot"]["columns"] == ["region"]
    assert steps["auto_impute"]["columns"] == ["tenure_months", "monthly_charges",
                                               "total_charges", "senior", "charges_per_month"]
    assert steps["auto_impute"]["options"]["strategy"] == "median"
    out = churn.transform(train)
    assert out.dtypes.eq(np.float64).all() and not out.isna().any().any()
    assert out["senior"].tolist() == train["senior"].astype(float).tolist()
    assert list(out.index) == list(train.index)
    unfitted = pipe(CHURN_STEPS, CHURN_KINDS).describe()
    assert unfitted[2]["params"] == "not fitted" and unfitted[0]["params"] == (
        "total_charges / tenure_months")
    describe = churn.describe()
    assert [r["step"] for r in describe] == ["create_features", "auto_boolean",
                                             "normalize_numeric", "encode_categorical",
                                             "auto_one_hot", "auto_impute"]
    assert [r["auto"] for r in describe] == [False, True, False, False, True, True]
    assert "mean=" in describe[2]["params"] and "region: 3 categories" in describe[4]["params"]


def test_final_imputation_uses_training_median_and_zero_for_all_null():
    df = pd.DataFrame({"a": [1.0, 2.0, 4.0, np.nan], "b": [np.nan] * 4, "flag": [True, None, True, False]})
    p = pipe([], {"a": "numeric", "b": "numeric", "flag": "boolean"}).fit(df)
    fitted = p.to_dict()["steps"][-1]["fitted"]
    assert fitted == {"a": {"value": 2.0}, "b": {"value": 0.0}, "flag": {"value": 1.0}}
    out = p.transform(pd.DataFrame({"a": [None], "b": [None], "flag": [None]}, dtype=object))
    assert out.to_numpy().tolist() == [[2.0, 0.0, 1.0]]
    assert p.stats["nulls_imputed"] == {"a": 1, "b": 1, "flag": 1}


def test_categories_compare_as_strings_and_nulls():
    df = pd.DataFrame({"c": pd.Series([1, "1", 1.0, 2, None, np.nan], dtype=object)})
    p = pipe([T(name="oh", columns=["c"], method="one_hot")], {"c": "categorical"}).fit(df)
    assert p.output_columns == ["c=1", "c=2", "c=__null__"]
    assert p.transform_records([{"c": "1"}, {"c": 1}, {"c": 2.0}, {"c": None},
                                {"c": float("nan")}]).tolist() == [
        [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]
    assert p.stats["unknown_categories"]["c"] == 0


def test_division_by_zero_is_counted_and_imputed():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.0, 0.0, 2.0, 0.0]})
    p = pipe([T(name="d", derived=[{"name": "ratio", "formula": "a / b"}])],
             {"a": "numeric", "b": "numeric"}).fit(df)
    # training ratio = [1, NaN, 1.5, NaN] -> median 1.25 fills the division by zero
    assert p.transform(df)["ratio"].tolist() == [1.0, 1.25, 1.5, 1.25]
    assert p.stats["division_by_zero"] == {"ratio": 2}
    p.transform_records([{"a": 5, "b": 0}])
    assert p.stats["division_by_zero"] == {"ratio": 3}


def test_derived_reads_categorical_and_boolean_raw_values():
    df = pd.DataFrame({"contract": ["two_year", "month", None], "senior": [True, False, True],
                       "charge": [10.0, 20.0, 30.0]})
    p = pipe([T(name="d", derived=[
        {"name": "long", "formula": "contract == 'two_year'"},
        {"name": "senior_charge", "formula": "charge * senior"},
        {"name": "double_senior", "formula": "senior_charge * 2"}])],
        {"contract": "categorical", "senior": "boolean", "charge": "numeric"}).fit(df)
    out = p.transform(df)
    assert out["long"].tolist() == [1.0, 0.0, 0.0]
    assert out["senior_charge"].tolist() == [10.0, 0.0, 30.0]
    assert out["double_senior"].tolist() == [20.0, 0.0, 60.0]
    np.testing.assert_array_equal(p.transform_records(records_of(df)), out.to_numpy())


def test_constant_formula_and_single_dict_record():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    p = pipe([T(name="d", derived=[{"name": "k", "formula": "2 ** 3"},
                                   {"name": "same", "formula": "a"}])], {"a": "numeric"}).fit(df)
    assert p.transform(df).to_numpy().tolist() == [[1, 8, 1], [2, 8, 2], [3, 8, 3]]
    assert p.transform_records({"a": 5}).tolist() == [[5.0, 8.0, 5.0]]
    assert p.transform_records([]).shape == (0, 3)


def test_formula_may_read_a_column_that_is_not_an_input():
    df = pd.DataFrame({"a": [1.0, 2.0], "raw_only": [10.0, 20.0]})
    p = pipe([T(name="d", derived=[{"name": "s", "formula": "a + raw_only"}])],
             {"a": "numeric", "raw_only": "numeric"}, inputs=["a"]).fit(df)
    assert p.required_columns == ["a", "raw_only"]
    assert p.output_columns == ["a", "s"]
    assert p.transform_records([{"a": 1, "raw_only": 2}]).tolist() == [[1.0, 3.0]]


def test_counting_does_not_change_outputs(churn):
    test = churn_frame(200, seed=3)
    first = churn.transform(test)
    second = churn.transform(test)
    assert first.equals(second)
    assert churn.stats["rows"] == 400
    assert churn.stats["division_by_zero"]["charges_per_month"] == 2 * int(
        ((test["tenure_months"] == 0)).sum())


# --------------------------------------------------------------------------- state

def test_to_dict_from_dict_round_trip_is_json(churn, train):
    state = churn.to_dict()
    text = json.dumps(state, allow_nan=False)           # plain JSON, no NaN, no objects
    again = FeaturePipeline.from_dict(json.loads(text))
    assert again == churn and again.to_dict() == state
    test = churn_frame(100, seed=4)
    assert again.transform(test).equals(churn.transform(test))
    unfitted = pipe(CHURN_STEPS, CHURN_KINDS)
    assert FeaturePipeline.from_dict(unfitted.to_dict()).is_fitted is False


def test_save_load(churn, tmp_path):
    path = churn.save(tmp_path / "sub" / "features.json")
    loaded = FeaturePipeline.load(path)
    assert loaded == churn
    assert json.loads(path.read_text())["format"] == "rayline.feature_pipeline"
    test = churn_frame(50, seed=6)
    np.testing.assert_array_equal(loaded.transform_records(records_of(test)),
                                  churn.transform(test).to_numpy())


def test_pickles_as_its_json_state(churn):
    clone = pickle.loads(pickle.dumps(churn))
    assert clone == churn and clone.is_fitted


def test_from_dict_rejects_foreign_state():
    with pytest.raises(FeatureError, match="not a feature pipeline state"):
        FeaturePipeline.from_dict({"steps": []})


# --------------------------------------------------------------------------- records == frame

def random_records(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        tenure = rng.choice([None, 0, 0.0, int(rng.integers(1, 72)), float(rng.uniform(1, 72))],
                            p=[.1, .1, .1, .35, .35])
        records.append({
            "tenure_months": None if tenure is None else tenure.item() if hasattr(tenure, "item") else tenure,
            "monthly_charges": None if rng.random() < .1 else float(rng.normal(70, 30)),
            "total_charges": None if rng.random() < .05 else float(rng.normal(2000, 800)),
            "contract": [None, "month_to_month", "one_year", "two_year", "lifetime"][rng.integers(5)],
            "payment_method": [None, "card", "bank", "check", "crypto", 7][rng.integers(6)],
            "senior": [True, False, None][rng.integers(3)],
            "region": ["north", "south", "east", "west", None][rng.integers(5)],
            "extra_field": "ignored",
        })
    return records


EQUALITY_STEPS = CHURN_STEPS + [
    T(name="imp", columns=["monthly_charges"], method="impute", strategy="mean"),
    T(name="lg", columns=["total_charges"], method="log"),
    T(name="more", derived=[
        {"name": "log_ratio", "formula": "log(total_charges) - log1p(tenure_months) * 0.3"},
        {"name": "rate", "formula": "monthly_charges / (tenure_months - 12) if tenure_months > 0 else exp(-tenure_months)"},
        {"name": "is_long", "formula": "contract == 'two_year' or contract == 'one_year'"}]),
    T(name="clp", columns=["rate"], method="clip", lower=-50, upper=50),
    T(name="mm", columns=["log_ratio"], method="min_max_scaler"),
    T(name="ord", columns=["region"], method="ordinal", categories={"region": ["north", "south", "east"]}),
]


def test_frame_and_records_give_identical_numbers_1000(train):
    p = pipe(EQUALITY_STEPS, CHURN_KINDS).fit(train)
    records = random_records(1000, seed=11)
    frame = pd.DataFrame(records)
    p.reset_stats()
    from_frame = p.transform(frame)
    frame_stats = json.loads(json.dumps(p.stats))
    p.reset_stats()
    from_records = p.transform_records(records)
    assert from_records.dtype == np.float64 and from_records.shape == (1000, len(p.output_columns))
    assert np.array_equal(from_frame.to_numpy(), from_records)        # exact, not allclose
    assert not np.isnan(from_records).any()
    assert p.stats == frame_stats
    # the cases the test is meant to cover did occur
    assert p.stats["unknown_categories"]["contract"] > 0
    assert p.stats["unknown_categories"]["payment_method"] > 0
    assert p.stats["unknown_categories"]["region"] > 0
    assert p.stats["division_by_zero"]["charges_per_month"] > 0
    assert p.stats["division_by_zero"]["rate"] > 0
    assert p.stats["nulls_imputed"]["monthly_charges"] > 0
    # one record at a time gives the same rows too
    singles = np.vstack([p.transform_records(r) for r in records[:200]])
    assert np.array_equal(singles, from_records[:200])


def test_frame_dtypes_do_not_change_numbers(churn):
    records = random_records(300, seed=12)
    frame = pd.DataFrame(records)
    variants = [
        frame,
        frame.astype({"senior": "boolean", "contract": "string"}),
        frame.astype(object),
        frame.iloc[::-1].iloc[::-1],
    ]
    expected = churn.transform_records(records)
    for variant in variants:
        assert np.array_equal(churn.transform(variant).to_numpy(), expected)


# --------------------------------------------------------------------------- errors

def test_missing_column_at_fit_names_column_and_transformation(train):
    with pytest.raises(FeatureError, match=r"'monthly_charges' is missing from the data.*"
                                           r"normalize_numeric"):
        pipe(CHURN_STEPS, CHURN_KINDS).fit(train.drop(columns=["monthly_charges"]))
    with pytest.raises(FeatureError, match=r"'total_charges' is missing.*create_features"):
        pipe(CHURN_STEPS, CHURN_KINDS).fit(train.drop(columns=["total_charges"]))


def test_missing_column_at_transform(churn, train):
    with pytest.raises(FeatureError, match=r"'contract' is missing from the data.*"
                                           r"encode_categorical"):
        churn.transform(train.drop(columns=["contract"]))


def test_transform_before_fit():
    p = pipe(CHURN_STEPS, CHURN_KINDS)
    with pytest.raises(FeatureError, match="not fitted"):
        p.transform(churn_frame(5))
    with pytest.raises(FeatureError, match="not fitted"):
        p.transform_records([{}])
    with pytest.raises(FeatureError, match="not fitted"):
        p.output_columns


def test_record_missing_required_column(churn):
    record = random_records(2, seed=1)
    del record[1]["region"]
    with pytest.raises(FeatureError, match=r"record 1 has no 'region'.*auto_one_hot"):
        churn.transform_records(record)
    assert set(churn.required_columns) == set(CHURN_KINDS)


def test_bad_values_are_reported(churn):
    record = random_records(1, seed=1)[0]
    with pytest.raises(FeatureError, match="'monthly_charges' is numeric but holds 'abc'"):
        churn.transform_records([{**record, "monthly_charges": "abc"}])
    with pytest.raises(FeatureError, match="'senior' is boolean but holds 5"):
        churn.transform_records([{**record, "senior": 5}])


def test_spec_mistakes_found_before_any_data():
    kinds = {"a": "numeric", "c": "categorical"}
    with pytest.raises(FeatureError, match=r"transformation 'sc' \(standard_scaler\): column 'zz' "
                                           r"is not an input column"):
        pipe([T(name="sc", columns=["zz"], method="standard_scaler")], kinds)
    with pytest.raises(FeatureError, match="'c' is categorical; encode it"):
        pipe([T(name="sc", columns=["c"], method="standard_scaler")], kinds)
    with pytest.raises(FeatureError, match="already one-hot encoded by transformation 'oh'"):
        pipe([T(name="oh", columns=["c"], method="one_hot"),
              T(name="oh2", columns=["c"], method="one_hot")], kinds)
    with pytest.raises(FeatureError, match="no kind for input column 'b'"):
        FeaturePipeline.from_spec([], ["a", "b"], {"a": "numeric"})
    with pytest.raises(FeatureError, match=r"derived feature 'r' \(transformation 'd'\) reads 'q'"):
        pipe([T(name="d", derived=[{"name": "r", "formula": "a / q"}])], kinds)
    with pytest.raises(FeatureError, match="kind 'datetime'"):
        FeaturePipeline.from_spec([], ["t"], {"t": "datetime"})


def test_empty_fit_frame():
    with pytest.raises(FeatureError, match="empty"):
        pipe([], {"a": "numeric"}).fit(pd.DataFrame({"a": []}))
