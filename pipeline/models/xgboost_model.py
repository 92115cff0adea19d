"""XGBoost through Ray Train's XGBoostTrainer (a training function per worker; xgboost-ray is
dead). Data-parallel over the plan's workers, early stopping on the validation split.

Metrics are reported to Ray Train once, at the end, with the checkpoint: reporting every round
costs ~1.8 s a round on a small machine (RayTrainReportCallback does exactly that).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.base import TrainData, TrainedModel

LABEL = "__label__"
_SPEC_ALIASES = {"n_estimators": "num_boost_round", "learning_rate": "eta"}


class XGBoostModel(TrainedModel):
    family = "xgboost"

    def __init__(self, params: dict[str, Any], booster, n_classes: int):
        super().__init__(params)
        self.booster = booster
        self.n_classes = n_classes

    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        import xgboost

        out = self.booster.inplace_predict(X) if X.size else np.zeros((0,))
        out = np.asarray(out, dtype=np.float64)
        if self.n_classes == 2:
            out = out.reshape(-1)
            return np.column_stack([1.0 - out, out])
        if self.n_classes > 2:
            return out.reshape(-1, self.n_classes)
        return out.reshape(-1)

    def _save_weights(self, directory: Path) -> str:
        self.booster.save_model(str(directory / "model.ubj"))
        return "model.ubj"

    @classmethod
    def _load_weights(cls, directory: Path, meta: dict) -> "XGBoostModel":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(directory / meta["weights"]))
        booster.set_param({"nthread": 1})
        return cls(meta["params"], booster, int(meta["params"].get("n_classes", 0)))


def booster_params(given: dict[str, Any], problem_type: str, n_classes: int, seed: int,
                   threads: int, use_gpu: bool) -> tuple[dict[str, Any], int, int]:
    """(xgboost params, boosting rounds, early-stopping rounds) from the spec's model_params."""
    params: dict[str, Any] = {"max_depth": 6, "eta": 0.1, "tree_method": "hist", "seed": seed,
                              "nthread": threads, "device": "cuda" if use_gpu else "cpu"}
    rounds, early = 300, 20
    for key, value in given.items():
        key = _SPEC_ALIASES.get(key, key)
        if key == "num_boost_round":
            rounds = int(value)
        elif key == "early_stopping_rounds":
            early = int(value)
        else:
            params[key] = value
    if problem_type == "regression":
        params.setdefault("objective", "reg:squarederror")
        params.setdefault("eval_metric", "rmse")
    elif n_classes == 2:
        params.setdefault("objective", "binary:logistic")
        params.setdefault("eval_metric", "logloss")
    else:
        params.setdefault("objective", "multi:softprob")
        params.setdefault("eval_metric", "mlogloss")
        params["num_class"] = n_classes
    return params, rounds, early


def _train_fn(config: dict) -> None:
    """Runs in each Ray Train worker: its shard of train, all of validation."""
    import ray.train
    import xgboost
    from ray.train import Checkpoint

    def load(name: str):
        shard = ray.train.get_dataset_shard(name)
        batches = list(shard.iter_batches(batch_size=None, batch_format="numpy"))
        if not batches:
            return np.zeros((0, len(config["features"]))), np.zeros(0)
        X = np.column_stack([np.concatenate([b[c] for b in batches]) for c in config["features"]])
        return X.astype(np.float32), np.concatenate([b[LABEL] for b in batches])

    X_train, y_train = load("train")
    X_val, y_val = load("validation")
    dtrain = xgboost.DMatrix(X_train, label=y_train)
    dval = xgboost.DMatrix(X_val, label=y_val)
    history: dict = {}
    booster = xgboost.train(config["params"], dtrain, num_boost_round=config["rounds"],
                            evals=[(dval, "validation")], evals_result=history,
                            early_stopping_rounds=config["early"] or None, verbose_eval=False)
    best = getattr(booster, "best_iteration", None)
    if best is not None and config["early"]:
        booster = booster[: best + 1]
    metric = config["params"]["eval_metric"]
    curve = history.get("validation", {}).get(metric, [])
    metrics = {"rounds": booster.num_boosted_rounds(), f"validation_{metric}": float(curve[best if best is not None else -1]) if curve else float("nan")}
    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as tmp:
            booster.save_model(str(Path(tmp) / "model.ubj"))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def train_xgboost(data: TrainData, given: dict[str, Any]) -> XGBoostModel:
    import pandas as pd
    import ray.data
    import ray.train
    import xgboost
    from ray.train.xgboost import XGBoostTrainer

    plan = data.plan
    params, rounds, early = booster_params(given, data.problem_type, data.n_classes, data.seed,
                                           plan.threads, plan.use_gpu)
    features = [f"f{i}" for i in range(data.X_train.shape[1])]

    def frame(X: np.ndarray, y: np.ndarray) -> "ray.data.Dataset":
        df = pd.DataFrame(X.astype(np.float32), columns=features)
        df[LABEL] = y
        return ray.data.from_pandas(df)

    trainer = XGBoostTrainer(
        _train_fn,
        train_loop_config={"params": params, "rounds": rounds, "early": early, "features": features},
        datasets={"train": frame(data.X_train, data.y_train),
                  "validation": frame(data.X_val, data.y_val)},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.num_workers, use_gpu=plan.use_gpu,
            resources_per_worker={"CPU": plan.cpus_per_worker}),
        run_config=ray.train.RunConfig(storage_path=data.storage_path,
                                       name=f"{data.run_tag}-xgboost"),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as ckpt:
        booster = xgboost.Booster()
        booster.load_model(str(Path(ckpt) / "model.ubj"))
    booster.set_param({"nthread": 1, "device": "cpu"})  # serving and evaluation run on CPU
    saved = {**given, "n_classes": data.n_classes, "rounds_trained": booster.num_boosted_rounds()}
    return XGBoostModel(saved, booster, data.n_classes)
