"""The tuning plan without a cluster: search-space syntax -> Tune domains (and what Optuna and
HyperOpt make of them), objectives, trial concurrency, plain vs dotted keys, the round-robin
searcher's determinism and state, and the in-process trial fits."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.spec import SearchChoice, SearchRange, SpecError, parse_spec
from pipeline.tuning import (
    DEFAULT_SPACES, TUNABLE, decode, search_plan, to_domain, trial_resources,
)

BASE = """\
name: demo
sources:
  - type: files
    path: data/x.csv
target: y
problem_type: {problem}
baseline_models: {models}
"""


def spec_of(tuning: str, problem: str = "classification",
            models: str = "[logistic_regression, random_forest, xgboost]", extra: str = ""):
    text = BASE.format(problem=problem, models=models) + textwrap.dedent(extra) + \
        "tuning:\n" + textwrap.indent(textwrap.dedent(tuning), "  ")
    return parse_spec(text, "spec.yaml", env={}, base_dir=Path("/tmp")), text


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def plan_problems(tuning: str, **kw) -> tuple[list[str], str]:
    spec, text = spec_of(tuning, **kw)
    with pytest.raises(SpecError) as info:
        search_plan(spec)
    return info.value.problems, text


# --------------------------------------------------------------------------- search-space syntax

def dimension(written: str):
    spec, _ = spec_of(f"search_space:\n  p: {written}\n", models="[xgboost]",
                      extra="")
    return spec.tuning.search_space["p"]


@pytest.mark.parametrize("written, kind, bounds", [
    ("[0.001, 0.1, log]", "Float/LogUniform", (0.001, 0.1)),
    ("[0.1, 0.9, uniform]", "Float/Uniform", (0.1, 0.9)),
    ("[0.1, 0.9, float]", "Float/Uniform", (0.1, 0.9)),
    ("[3, 10, int]", "Integer/Uniform", (3, 11)),          # Tune's randint excludes its upper bound
    ("[1, 1000, log_int]", "Integer/LogUniform", (1, 1001)),
    ("[1, 1000, int_log]", "Integer/LogUniform", (1, 1001)),
    ("{low: 0.5, high: 2.5, integer: true}", "Integer/Uniform", (1, 3)),
    ("{low: 1.0e-4, high: 1.0, log: true}", "Float/LogUniform", (1e-4, 1.0)),
])
def test_ranges_map_to_tune_domains(written, kind, bounds):
    domain = to_domain(dimension(written))
    assert f"{type(domain).__name__}/{type(domain.get_sampler()).__name__.lstrip('_')}" == kind
    assert (domain.lower, domain.upper) == pytest.approx(bounds)


@pytest.mark.parametrize("written, values", [
    ("[hist, approx]", ["hist", "approx"]),
    ("[3, 5, 7]", [3, 5, 7]),
    ("[0.1, 0.9]", [0.1, 0.9]),                          # two numbers are a choice, not a range
    ("hist", ["hist"]),
    ("{values: [null, 10, 20]}", [None, 10, 20]),
    ("[[64, 32], [128]]", [[64, 32], [128]]),
])
def test_choices_sample_an_index_and_decode_to_the_value(written, values):
    dim = dimension(written)
    assert isinstance(dim, SearchChoice)
    domain = to_domain(dim)
    assert type(domain).__name__ == "Categorical" and domain.categories == list(range(len(values)))
    assert [decode({"p": dim}, {"p": np.int64(i)})["p"] for i in range(len(values))] == values


def test_integer_bounds_are_inclusive_for_every_searcher():
    from ray.tune.search.hyperopt import HyperOptSearch
    from ray.tune.search.optuna import OptunaSearch

    space = {"d": to_domain(SearchRange(low=3, high=10, integer=True)),
             "n": to_domain(SearchRange(low=10, high=1000, integer=True, log=True))}
    optuna = OptunaSearch.convert_search_space(space)
    assert (optuna["d"].low, optuna["d"].high, optuna["d"].log) == (3, 10, False)
    assert (optuna["n"].low, optuna["n"].high, optuna["n"].log) == (10, 1000, True)
    rng = np.random.default_rng(0)
    draws = {space["d"].sample(random_state=rng) for _ in range(400)}
    assert draws == set(range(3, 11))
    import hyperopt.pyll.stochastic as stochastic
    hp = HyperOptSearch.convert_search_space(space)
    samples = [stochastic.sample(hp, rng=np.random.default_rng(i)) for i in range(300)]
    assert {s["d"] for s in samples} == set(range(3, 11))
    assert all(10 <= s["n"] <= 1000 for s in samples)


def test_decode_gives_plain_python_values():
    space = {"lr": SearchRange(low=0.01, high=0.3, log=True),
             "depth": SearchRange(low=3, high=10, integer=True)}
    out = decode(space, {"lr": np.float64(0.05), "depth": np.float64(6.0)})
    assert out == {"lr": 0.05, "depth": 6}
    assert type(out["lr"]) is float and type(out["depth"]) is int


def test_an_integer_range_without_an_integer_is_refused():
    with pytest.raises(ValueError, match="holds no integer"):
        to_domain(SearchRange(low=0.2, high=0.8, integer=True))


# --------------------------------------------------------------------------- objective

@pytest.mark.parametrize("objective, problem, expected", [
    ("maximize_f1", "classification", ("max", "f1_score", "val_f1_score")),
    ("maximize_auc", "classification", ("max", "auc_roc", "val_auc_roc")),
    ("minimize_log_loss", "classification", ("min", "log_loss", "val_log_loss")),
    ("auto", "classification", ("max", "f1_score", "val_f1_score")),
    ("minimize_rmse", "regression", ("min", "rmse", "val_rmse")),
    ("maximize_r2", "regression", ("max", "r2_score", "val_r2_score")),
    ("auto", "regression", ("min", "rmse", "val_rmse")),
])
def test_objective(objective, problem, expected):
    models = "[linear_regression, xgboost]" if problem == "regression" else "[logistic_regression]"
    extra = ("evaluation:\n  classification: [accuracy, f1_score, auc_roc, log_loss]\n"
             if problem == "classification" else "")
    spec, _ = spec_of(f"objective: {objective}\n", problem=problem, models=models, extra=extra)
    plan = search_plan(spec)
    assert (plan.mode, plan.metric, plan.key) == expected


def test_a_custom_metric_can_be_the_objective():
    extra = ("evaluation:\n  custom:\n    - {name: retention_value, formula: 120 * tp - 20 * fp}\n"
             "    - {name: cost, cost_matrix: [[0, 1], [5, 0]]}\n")
    spec, _ = spec_of("objective: maximize_retention_value\n", models="[xgboost]", extra=extra)
    assert (search_plan(spec).mode, search_plan(spec).key) == ("max", "val_retention_value")
    spec, _ = spec_of("objective: minimize_cost\n", models="[xgboost]", extra=extra)
    assert (search_plan(spec).mode, search_plan(spec).metric) == ("min", "cost")


# --------------------------------------------------------------------------- concurrency

@pytest.mark.parametrize("setting, n_trials, cpus, expected", [
    ("auto", 20, 4, (3, 1)),       # one CPU stays free
    ("auto", 20, 2, (1, 1)),
    ("auto", 20, 1, (1, 1)),       # never zero
    ("auto", 2, 16, (2, 1)),       # no more slots than trials
    (2, 20, 4, (2, 1)),
    (2, 20, 9, (2, 4)),            # spare CPUs become threads of each trial
    (1, 20, 8, (1, 7)),
    (8, 20, 4, (3, 1)),            # more than fits: cut, and said so
    (4, 2, 16, (2, 7)),
])
def test_trial_resources(setting, n_trials, cpus, expected):
    concurrent, per, why = trial_resources(setting, n_trials, cpus)
    assert (concurrent, per) == expected
    assert concurrent * per <= max(1, cpus - 1)
    assert ("cut" in why) == (setting == 8)


# --------------------------------------------------------------------------- keys

def test_a_plain_key_applies_to_every_family_that_takes_it():
    spec, _ = spec_of("search_space:\n  max_depth: [3, 10, int]\n  C: [0.01, 10, log]\n")
    plan = search_plan(spec)
    assert plan.families == ["logistic_regression", "random_forest", "xgboost"]
    assert set(plan.spaces["xgboost"]) == {"max_depth"}
    assert set(plan.spaces["random_forest"]) == {"max_depth"}
    assert set(plan.spaces["logistic_regression"]) == {"C"}


def test_n_estimators_and_learning_rate_reach_the_families_that_take_them():
    spec, _ = spec_of("search_space:\n  n_estimators: [50, 200, int]\n  learning_rate: [0.01, 0.3, log]\n")
    plan = search_plan(spec)
    assert plan.families == ["random_forest", "xgboost"]           # logistic_regression takes neither
    assert set(plan.spaces["xgboost"]) == {"n_estimators", "learning_rate"}
    assert set(plan.spaces["random_forest"]) == {"n_estimators"}


def test_a_dotted_key_names_one_family_and_wins_over_a_plain_key():
    spec, _ = spec_of("search_space:\n  max_depth: [3, 10, int]\n  xgboost.max_depth: [2, 4, int]\n"
                      "  random_forest.min_samples_leaf: [1, 20, int]\n")
    plan = search_plan(spec)
    assert plan.spaces["xgboost"]["max_depth"] == SearchRange(low=2, high=4, integer=True)
    assert plan.spaces["random_forest"] == {"max_depth": SearchRange(low=3, high=10, integer=True),
                                            "min_samples_leaf": SearchRange(low=1, high=20, integer=True)}
    assert "logistic_regression" not in plan.families


def test_tuning_models_restricts_plain_keys_and_defaults_a_family_without_keys():
    spec, _ = spec_of("models: [xgboost, logistic_regression]\nsearch_space:\n  max_depth: [3, 10, int]\n")
    plan = search_plan(spec)
    assert plan.families == ["xgboost", "logistic_regression"]
    assert set(plan.spaces["xgboost"]) == {"max_depth"}                 # not random_forest
    assert plan.spaces["logistic_regression"] == DEFAULT_SPACES["logistic_regression"]
    assert any("logistic_regression" in n and "default space" in n for n in plan.notes)


def test_an_empty_search_space_tunes_every_tunable_family_with_its_default_space():
    spec, _ = spec_of("n_trials: 4\n", models="[logistic_regression, xgboost]")
    plan = search_plan(spec)
    assert plan.families == ["logistic_regression", "xgboost"]
    assert plan.spaces == {f: DEFAULT_SPACES[f] for f in plan.families}
    assert set(DEFAULT_SPACES) == set(TUNABLE)
    assert all(set(space) <= TUNABLE[f] for f, space in DEFAULT_SPACES.items())


@pytest.mark.parametrize("tuning, needle, message", [
    ("search_space:\n  nope: [1, 2, int]\n", "nope:", "no tuned model family takes 'nope'"),
    ("search_space:\n  random_forest.max_depth: [1, 5, int]\n", "random_forest.max_depth:",
     "random_forest is not a model family of this spec"),
    ("search_space:\n  xgboost.C: [0.1, 1, log]\n", "xgboost.C:", "xgboost has no parameter 'C'"),
    ("search_space:\n  bogus.x: [1, 2]\n", "bogus.x:", "bogus is not a model family"),
    ("models: [xgboost]\nsearch_space:\n  logistic_regression.C: [0.1, 1, log]\n",
     "logistic_regression.C:", "logistic_regression is not in tuning.models"),
    ("models: [xgboost]\nsearch_space:\n  C: [0.1, 1, log]\n", "C:", "no tuned model family takes 'C'"),
])
def test_bad_keys_name_their_line(tuning, needle, message):
    problems, text = plan_problems(tuning, models="[logistic_regression, xgboost]")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"spec.yaml:{line_of(text, needle)}: "), problems[0]
    assert message in problems[0]


def test_tuning_models_must_be_trained_and_tunable():
    problems, _ = plan_problems("models: [random_forest]\n", models="[logistic_regression]")
    assert "does not train" in problems[0]
    problems, _ = plan_problems("models: [neural_network]\n",
                                models="[logistic_regression]\nadvanced_models: [neural_network]")
    assert "neural_network cannot be tuned yet" in problems[0]


def test_fewer_trials_than_families_is_said():
    spec, _ = spec_of("n_trials: 1\n", models="[logistic_regression, xgboost]")
    assert any("xgboost keep their model_params" in n for n in search_plan(spec).notes)


# --------------------------------------------------------------------------- searchers

def suggestions(searcher, ids):
    return [searcher.suggest(i) for i in ids]


@pytest.mark.parametrize("method", ["random", "optuna", "hyperopt"])
def test_round_robin_is_seeded_and_resumes_where_it_stopped(method, tmp_path):
    from pipeline.tuning.searchers import make_searcher

    spec, _ = spec_of(f"method: {method}\nsearch_space:\n  C: [0.01, 10, log]\n"
                      "  max_depth: [2, 6, int]\n", models="[logistic_regression, xgboost]")
    plan = search_plan(spec)
    first = make_searcher(method, plan, seed=7)
    out = suggestions(first, ["a", "b", "c", "d"])
    assert [s["family"] for s in out] == ["logistic_regression", "xgboost"] * 2
    assert [s["index"] for s in out] == [1, 2, 3, 4]
    assert all(0.01 <= s["params"]["C"] <= 10 for s in out if s["family"] == "logistic_regression")
    assert all(s["params"]["max_depth"] in range(2, 7) and type(s["params"]["max_depth"]) is int
               for s in out if s["family"] == "xgboost")
    again = make_searcher(method, plan, seed=7)
    assert suggestions(again, ["a", "b", "c", "d"]) == out          # seeded

    for i, s in zip("abcd", out):
        first.on_trial_complete(i, result={plan.key: 0.5, **s}, error=False)
    first.save(str(tmp_path / "state.pkl"))
    restored = make_searcher(method, plan, seed=7)
    restored.restore(str(tmp_path / "state.pkl"))
    assert suggestions(restored, ["e", "f"]) == suggestions(first, ["e", "f"])
    assert [s["index"] for s in suggestions(restored, ["g"])] == [7]


# --------------------------------------------------------------------------- the trial, in-process

def trial_data(problem="classification", report_every=0, metric="f1_score", custom=()):
    from pipeline.tuning.trial import TrialData

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    if problem == "classification":
        y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=400) > 0).astype(np.int64)
        names = ["accuracy", "f1_score", "auc_roc"]
    else:
        y = X[:, 0] * 2 + rng.normal(scale=0.1, size=400)
        names = ["rmse", "r2_score"]
    return TrialData(X_train=X[:300], y_train=y[:300], X_val=X[300:], y_val=y[300:],
                     problem_type=problem, n_classes=2 if problem == "classification" else 0,
                     seed=1, threads=1, key=f"val_{metric}", metric=metric, names=names,
                     custom=list(custom), model_params={"xgboost": {"max_depth": 3}},
                     report_every=report_every)


def test_xgboost_reports_the_objective_every_k_rounds_and_stops_early_as_training_does():
    from pipeline.tuning.trial import _fit_xgboost, _metrics, _objective

    data = trial_data(report_every=10)
    reports = []
    scores, extra = _fit_xgboost(data, {"n_estimators": 50, "learning_rate": 0.3},
                                 lambda r, s: reports.append((r, _objective(data, s))))
    assert [r for r, _ in reports] == [10, 20, 30, 40][:len(reports)] and reports
    assert all(0.0 <= v <= 1.0 for _, v in reports)
    assert scores.shape == (100, 2) and 1 <= extra["rounds_trained"] <= 50
    metrics = _metrics(data, scores, data.names, data.custom)
    assert set(metrics) == {"accuracy", "f1_score", "auc_roc"} and metrics["auc_roc"] > 0.8


def test_sklearn_trial_and_a_custom_objective():
    from pipeline.spec import CustomMetric
    from pipeline.tuning.trial import _fit_sklearn, _objective

    cost = CustomMetric(name="cost", cost_matrix=[[0, 1], [5, 0]])
    data = trial_data(metric="cost", custom=[cost])
    scores = _fit_sklearn("logistic_regression", data, {"C": 0.5})
    assert scores.shape == (100, 2)
    assert 0.0 <= _objective(data, scores) < 1.0
    reg = trial_data(problem="regression", metric="rmse")
    scores = _fit_sklearn("linear_regression", reg, {"alpha": 0.1})
    assert scores.shape == (100,) and _objective(reg, scores) < 0.5


def test_best_trials_prefer_finished_trials():
    from pipeline.tuning.driver import best_trials

    spec, _ = spec_of("objective: minimize_log_loss\n", models="[logistic_regression, xgboost]",
                      extra="evaluation:\n  classification: [log_loss]\n")
    plan = search_plan(spec)
    rows = [{"trial": 1, "family": "xgboost", "status": "stopped", "params": {"a": 1}, plan.key: 0.1},
            {"trial": 2, "family": "xgboost", "status": "done", "params": {"a": 2}, plan.key: 0.4},
            {"trial": 3, "family": "xgboost", "status": "done", "params": {"a": 3}, plan.key: 0.3},
            {"trial": 4, "family": "logistic_regression", "status": "error", "params": {}, plan.key: None}]
    assert best_trials(rows, plan) == {"xgboost": {"trial": 3, "params": {"a": 3}, "value": 0.3}}


def test_resume_refuses_a_changed_search_or_changed_data(tmp_path):
    import json

    from pipeline.tuning.driver import IDENTITY, _check_resumable, _identity

    spec, _ = spec_of("search_space:\n  C: [0.01, 10, log]\n", models="[logistic_regression]")
    plan = search_plan(spec)
    data = trial_data()
    with pytest.raises(LookupError, match="no tuning experiment to resume"):
        _check_resumable(tmp_path, _identity(spec, plan, data))
    (tmp_path / "tuner.pkl").write_bytes(b"")
    (tmp_path / IDENTITY).write_text(json.dumps(_identity(spec, plan, data), default=str))
    _check_resumable(tmp_path, _identity(spec, plan, data))           # the same: fine

    wider, _ = spec_of("search_space:\n  C: [0.01, 100, log]\n", models="[logistic_regression]")
    with pytest.raises(LookupError, match="different tuning"):
        _check_resumable(tmp_path, _identity(wider, search_plan(wider), data))
    data.X_val = data.X_val + 1.0
    with pytest.raises(LookupError, match="different data_sha256"):
        _check_resumable(tmp_path, _identity(spec, plan, data))


def test_trial_threads_share_every_cpu_but_never_exceed_the_cores(monkeypatch):
    from pipeline.tuning.space import trial_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1})
    assert trial_threads(concurrent=1, per=1, cpus=2) == 2      # the CPU kept free trains too
    assert trial_threads(concurrent=2, per=1, cpus=4) == 2
    assert trial_threads(concurrent=1, per=1, cpus=8) == 2      # 8 logical CPUs, 2 cores
    assert trial_threads(concurrent=1, per=3, cpus=8) == 3      # never below the trial's CPUs
    assert trial_threads(concurrent=1, per=1, cpus=8, nodes=2) == 8   # cores of other nodes unknown here
