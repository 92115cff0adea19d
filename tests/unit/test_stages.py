"""The training workload's stages, each called with only the sections it takes, no Ray, no MLflow:
split -> features -> evaluate -> the champion's predictor, and the run's outcome as a value."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from pipeline.models.sklearn_models import SklearnModel
from pipeline.spec import Expectations, FeatureSelection, Split, SpecError, Transformation, parse_spec
from pipeline.training import RunOutcome, RunRefused
from pipeline.training import stages as st

SPEC = """\
name: churn
sources: [{type: files, path: data.csv}]
target: churned
problem_type: classification
id_column: customer_id
transformations:
  - name: scale
    columns: [tenure]
    method: standard_scaler
  - name: encode
    columns: [contract]
    method: one_hot
selection_criteria: [auc_roc]
evaluation:
  thresholds: {auc_roc: 0.6}
  slices: [contract]
"""


def frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n).astype(float)
    contract = rng.choice(["month", "year", "two_year"], n)
    churned = ((tenure < 20) & (contract == "month")) | (rng.random(n) < 0.1)
    return pd.DataFrame({"customer_id": np.arange(n), "tenure": tenure, "contract": contract,
                         "charges": rng.normal(70, 10, n), "churned": churned.astype(int)})


@pytest.fixture
def spec(tmp_path):
    return parse_spec(SPEC, "spec.yaml", base_dir=tmp_path)


def test_split_is_seeded_stratified_and_complete():
    df = frame()
    a = st.split_frame(df, Split(), "churned", "classification", seed=7)
    b = st.split_frame(df, Split(), "churned", "classification", seed=7)
    assert a.stratified and a.sizes == {"train": 280, "validation": 60, "test": 60}
    assert a.train.index.equals(b.train.index) and a.test.index.equals(b.test.index)
    assert sorted([*a.train.index, *a.val.index, *a.test.index]) == list(df.index)
    # Stratified: every part keeps about the share of churners.
    share = df["churned"].mean()
    assert all(abs(part["churned"].mean() - share) < 0.05 for _, part in a.parts())


def test_split_without_test_and_without_stratification_on_rare_classes():
    df = frame(60)
    df.loc[:1, "churned"] = 2  # a class of two rows cannot be stratified
    notes = []
    split = st.split_frame(df, Split(ratios=(0.8, 0.2, 0.0)), "churned", "classification", 1,
                           note=notes.append)
    assert not split.stratified and notes and len(split.test) == 0
    assert split.held_out[0] == "val"


def test_features_fit_on_train_only_and_transform_every_part(spec):
    split = st.split_frame(frame(), spec.split, spec.target, spec.problem_type, spec.seed)
    fs = st.build_features(split, spec.transformations, spec.features, spec.expectations,
                           spec.target, spec.id_column, spec.problem_type, spec.origin)
    assert fs.inputs == ["tenure", "contract", "charges"]         # not the id, not the target
    assert fs.classes == [0, 1] and fs.n_classes == 2
    assert {k: v.shape[0] for k, v in fs.X.items()} == {"train": 280, "val": 60, "test": 60}
    scaled = fs.X["train"][:, fs.pipeline.output_columns.index("tenure")]
    assert abs(scaled.mean()) < 1e-9 and abs(scaled.std() - 1) < 1e-9   # fitted on train
    assert [f.name for f in fs.schema.fields] == fs.pipeline.required_columns
    assert set(fs.describe()) == {"inputs", "outputs", "steps"}


def test_a_step_that_does_not_fit_a_column_is_a_spec_error_naming_its_line():
    text = SPEC.replace("columns: [tenure]\n    method: standard_scaler",
                        "columns: [contract]\n    method: standard_scaler")
    spec = parse_spec(text, "spec.yaml")
    split = st.split_frame(frame(), spec.split, spec.target, spec.problem_type, spec.seed)
    with pytest.raises(SpecError) as info:
        st.build_features(split, spec.transformations, spec.features, spec.expectations,
                          spec.target, spec.id_column, spec.problem_type, spec.origin)
    [problem] = info.value.problems
    assert problem.startswith("spec.yaml:8: ")          # the line of `columns: [contract]`
    assert "scale" in problem and "contract" in problem and "categorical" in problem


def test_labels_for_regression_are_floats():
    df = frame().assign(charges=lambda d: d["charges"].round(1))
    split = st.split_frame(df, Split(), "charges", "regression", 3)
    classes, y = st.encode_labels(split, "charges", "regression")
    assert classes is None and y["train"].dtype == np.float64


def _models(fs) -> dict:
    X, y = fs.X["train"], fs.y["train"]
    return {"logistic_regression": SklearnModel("logistic_regression", {"C": 1.0},
                                                LogisticRegression(max_iter=500).fit(X, y)),
            "random_forest": SklearnModel("random_forest", {}, _constant(X, y))}


def meta(fs) -> dict:
    return {"name": "churn", "problem_type": "classification", "classes": fs.classes}


def _constant(X, y):
    from sklearn.dummy import DummyClassifier

    return DummyClassifier(strategy="prior").fit(X, y)


def test_evaluate_measures_every_candidate_and_picks_by_the_plan(spec, tmp_path):
    split = st.split_frame(frame(), spec.split, spec.target, spec.problem_type, spec.seed)
    fs = st.build_features(split, spec.transformations, spec.features, spec.expectations,
                           spec.target, spec.id_column, spec.problem_type, spec.origin)
    plan = spec.evaluation_plan
    outcome = st.evaluate(plan, _models(fs), {"logistic_regression": 0.1}, fs, split, meta(fs))
    assert [c.family for c in outcome.candidates] == ["logistic_regression", "random_forest"]
    assert outcome.champion.family == "logistic_regression"       # the constant model has AUC 0.5
    assert outcome.registrable and outcome.threshold_failures == []
    assert [row["champion"] for row in outcome.leaderboard] == [True, False]
    assert {"p50_ms", "p99_ms"} <= set(outcome.champion.latency)
    written = st.diagnostics(plan, outcome, fs, split, tmp_path)
    assert {p.name for p in written} >= {"confusion_matrix.png", "roc_curve.json", "slices.json"}
    predictor = st.predictor_for(outcome, fs, meta(fs))
    record = split.test.iloc[0][fs.pipeline.required_columns].to_dict()
    assert predictor.predict_records([record])[0]["prediction"] in (0, 1)


def test_thresholds_not_met_make_the_outcome_unregistrable(spec):
    spec = parse_spec(SPEC.replace("auc_roc: 0.6", "auc_roc: 0.999"), "spec.yaml")
    split = st.split_frame(frame(), spec.split, spec.target, spec.problem_type, spec.seed)
    fs = st.build_features(split, spec.transformations, spec.features, spec.expectations,
                           spec.target, spec.id_column, spec.problem_type, spec.origin)
    outcome = st.evaluate(spec.evaluation_plan, _models(fs), {}, fs, split, meta(fs))
    assert not outcome.registrable
    assert "below the threshold 0.999" in outcome.threshold_failures[0]


def test_no_eligible_model_is_a_refused_run_with_its_leaderboard(spec):
    spec = parse_spec(SPEC.replace("selection_criteria: [auc_roc]",
                                   "selection_criteria: [auc_roc, inference_latency < 0.0001ms]"), "spec.yaml")
    split = st.split_frame(frame(), spec.split, spec.target, spec.problem_type, spec.seed)
    fs = st.build_features(split, spec.transformations, spec.features, spec.expectations,
                           spec.target, spec.id_column, spec.problem_type, spec.origin)
    with pytest.raises(RunRefused) as info:
        st.evaluate(spec.evaluation_plan, _models(fs), {}, fs, split, meta(fs))
    assert "latency budget" in info.value.problems[0] and len(info.value.leaderboard) == 2
    assert info.value.exit_code == 3


def test_the_run_outcome_is_one_json_value():
    outcome = RunOutcome(
        spec_name="churn", run_id="r1", experiment_id="1", training_plan="1 x 1 CPU: one worker",
        data_versions={"raw_data": 0, "feature_store": 0}, validation={"rows": 10, "passed": 9},
        split={"train": 7, "validation": 1, "test": 1}, features={"inputs": ["a"]}, tuning=None,
        leaderboard=[{"model": "xgboost", "champion": True}], champion="xgboost",
        val_metrics={"auc_roc": 0.9}, test_metrics={"auc_roc": 0.88}, latency={"p99_ms": 1.0},
        thresholds={"auc_roc": 0.8}, threshold_failures=[], model_name="churn", model_version="2",
        previous_version="1")
    again = RunOutcome.from_dict(json.loads(json.dumps(outcome.to_dict())))
    assert again == outcome and again.registered and again.refused == []
    with pytest.raises(ValueError):
        RunOutcome.from_dict({"format": "something else"})


def test_sections_build_in_a_line():
    # A stage's inputs are sections, so a test needs no spec file.
    selection = FeatureSelection(exclude=["charges"])
    assert selection.columns(["id", "a", "charges", "y"], "y", "id") == ["a"]
    assert Expectations().columns == [] and Transformation(name="t", columns=["a"], method="log")
