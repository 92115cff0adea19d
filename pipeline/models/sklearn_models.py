"""scikit-learn families (logistic/linear regression, random forest), each fitted in a Ray task so
several fit side by side. Saved with skops, whose loader refuses types it was not told to trust."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.base import TrainData, TrainedModel

_DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "max_iter": 1000},
    "linear_regression": {"alpha": 1.0},
    "random_forest": {"n_estimators": 200, "max_depth": None, "min_samples_leaf": 1},
}


def make_estimator(family: str, problem_type: str, params: dict[str, Any], seed: int, threads: int):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    if family == "logistic_regression":
        return LogisticRegression(random_state=seed, **params)
    if family == "linear_regression":
        return Ridge(random_state=seed, **params)
    if family == "random_forest":
        cls = RandomForestClassifier if problem_type == "classification" else RandomForestRegressor
        return cls(random_state=seed, n_jobs=threads, **params)
    raise ValueError(f"not a scikit-learn family: {family}")


class SklearnModel(TrainedModel):
    def __init__(self, family: str, params: dict[str, Any], estimator):
        super().__init__(params)
        self.family = family
        self.estimator = estimator

    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        if hasattr(self.estimator, "predict_proba"):
            return self.estimator.predict_proba(X)
        return self.estimator.predict(X).astype(np.float64)

    def _save_weights(self, directory: Path) -> str:
        import skops.io as sio

        sio.dump(self.estimator, directory / "model.skops")
        return "model.skops"

    @classmethod
    def _load_weights(cls, directory: Path, meta: dict) -> "SklearnModel":
        import skops.io as sio

        path = directory / meta["weights"]
        untrusted = sio.get_untrusted_types(file=path)
        allowed = [t for t in untrusted if t.startswith(("sklearn.", "numpy."))]
        if set(untrusted) - set(allowed):
            raise ValueError(f"{path} holds types rayline does not load: "
                             f"{sorted(set(untrusted) - set(allowed))}")
        return cls(meta["family"], meta["params"], sio.load(path, trusted=allowed))


def params_for(family: str, given: dict[str, Any]) -> dict[str, Any]:
    return {**_DEFAULTS.get(family, {}), **given}


def _fit(family: str, problem_type: str, params: dict[str, Any], seed: int, threads: int,
         X: np.ndarray, y: np.ndarray):
    estimator = make_estimator(family, problem_type, params, seed, threads)
    estimator.fit(X, y)
    return estimator


def train_sklearn(families: list[str], data: TrainData,
                  model_params: dict[str, dict[str, Any]]) -> dict[str, SklearnModel]:
    """Fit each family as its own Ray task, all submitted at once."""
    import ray

    fit = ray.remote(num_cpus=1)(_fit)
    X_ref, y_ref = ray.put(data.X_train), ray.put(data.y_train)
    params = {f: params_for(f, model_params.get(f, {})) for f in families}
    threads = 1
    futures = {f: fit.remote(f, data.problem_type, params[f], data.seed, threads, X_ref, y_ref)
               for f in families}
    return {f: SklearnModel(f, params[f], ray.get(ref)) for f, ref in futures.items()}
