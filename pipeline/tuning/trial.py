"""One trial: a Tune function trainable that fits one family with one configuration in its own
process and reports validation metrics. The data arrives through the object store, put once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

ROUND_KEY = "boost_rounds"          # ASHA's time attribute; only xgboost's reports carry it


@dataclass
class TrialData:
    """Everything a trial needs, put in the object store once (`tune.with_parameters`)."""
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    problem_type: str
    n_classes: int
    seed: int
    threads: int
    key: str                                  # the objective, as reported: val_<metric>
    metric: str
    names: list[str]                          # built-in metrics of the final report
    custom: list                              # the spec's CustomMetric definitions
    model_params: dict[str, dict[str, Any]]   # fixed params per family; trials override
    report_every: int                         # xgboost rounds between reports; 0 = final only


def run_trial(config: dict, data: TrialData) -> None:
    """A Tune function trainable: fit one family with one configuration on the training split,
    report the validation metrics (xgboost: also the objective every `report_every` rounds)."""
    from ray import tune

    family = config["family"]
    params = {**data.model_params.get(family, {}), **config["params"]}
    start = time.perf_counter()
    if family == "xgboost":
        scores, extra = _fit_xgboost(data, params, lambda r, s: tune.report(
            {data.key: _objective(data, s), ROUND_KEY: r}))
    else:
        scores, extra = _fit_sklearn(family, data, params), {}
    fit_seconds = time.perf_counter() - start
    metrics = _metrics(data, scores, data.names, data.custom)
    tune.report({**{f"val_{k}": v for k, v in metrics.items()}, **extra,
                 "fit_seconds": fit_seconds, "final": 1})


def _fit_sklearn(family: str, data: TrialData, params: dict) -> np.ndarray:
    from pipeline.models.sklearn_models import SklearnModel, make_estimator, params_for

    full = params_for(family, params)
    estimator = make_estimator(family, data.problem_type, full, data.seed, data.threads)
    estimator.fit(data.X_train, data.y_train)
    return SklearnModel(family, full, estimator).predict_scores(data.X_val)


def _fit_xgboost(data: TrialData, params: dict, report) -> tuple[np.ndarray, dict]:
    """In-process xgboost with `threads` threads, early stopping on validation as in training;
    `report(rounds, validation scores)` every `report_every` rounds."""
    from pipeline.models.xgboost_model import booster_params, openmp_threads

    bparams, rounds, early = booster_params(params, data.problem_type, data.n_classes, data.seed,
                                            data.threads, False)
    with openmp_threads(data.threads):   # Tune sets OMP_NUM_THREADS to the trial's CPUs
        return _fit_xgboost_threads(data, bparams, rounds, early, report)


def _fit_xgboost_threads(data: TrialData, bparams: dict, rounds: int, early: int,
                         report) -> tuple[np.ndarray, dict]:
    import xgboost

    dtrain = xgboost.DMatrix(data.X_train, label=data.y_train, nthread=data.threads)
    dval = xgboost.DMatrix(data.X_val, label=data.y_val, nthread=data.threads)
    every = data.report_every

    class Intermediate(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            done = epoch + 1
            if every and done % every == 0 and done < rounds:
                raw = model.inplace_predict(data.X_val, iteration_range=(0, done))
                report(done, _xgb_scores(raw, data.n_classes))
            return False

    booster = xgboost.train(bparams, dtrain, num_boost_round=rounds, evals=[(dval, "validation")],
                            early_stopping_rounds=early or None, verbose_eval=False,
                            callbacks=[Intermediate()] if every else None)
    best = getattr(booster, "best_iteration", None)
    if best is not None and early:
        booster = booster[: best + 1]
    scores = _xgb_scores(booster.inplace_predict(data.X_val), data.n_classes)
    return scores, {"rounds_trained": booster.num_boosted_rounds()}


def _xgb_scores(raw, n_classes: int) -> np.ndarray:
    """As XGBoostModel.predict_scores: (n, k) probabilities, or (n,) predictions."""
    out = np.asarray(raw, dtype=np.float64)
    if n_classes == 2:
        out = out.reshape(-1)
        return np.column_stack([1.0 - out, out])
    if n_classes > 2:
        return out.reshape(-1, n_classes)
    return out.reshape(-1)


def _metrics(data: TrialData, scores: np.ndarray, names: list[str], custom: list) -> dict[str, float]:
    from pipeline.metrics import compute_metrics

    if data.problem_type == "regression":
        return compute_metrics("regression", data.y_val, scores, names=names, custom=custom)
    pred = scores.argmax(axis=1)
    # Classes are the label indices 0..k-1, in the order of the real labels, so every metric
    # (the positive class of binary metrics, cost-matrix rows) is the one evaluation computes.
    return compute_metrics("classification", data.y_val, pred, proba=scores,
                           classes=list(range(data.n_classes)), names=names, custom=custom)


def _objective(data: TrialData, scores: np.ndarray) -> float:
    builtin = [data.metric] if data.metric in data.names else [
        "accuracy" if data.problem_type == "classification" else "mae"]
    custom = [c for c in data.custom if c.name == data.metric]
    return _metrics(data, scores, builtin, custom)[data.metric]


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"
