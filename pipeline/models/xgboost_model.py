"""XGBoost through Ray Train's XGBoostTrainer (a training function per worker; xgboost-ray is
dead). Data-parallel over the plan's workers, early stopping on the validation split.

The arrays reach the workers through the object store (each takes every world_size-th training
row): they are already in the driver's memory, and a Ray Data streaming split adds seconds of
fixed cost. Fault tolerance: a checkpoint (model.ubj + early-stopping state) every
`checkpoint_every` rounds (default max(10, rounds // 10)) and at the end; a restarted run loads
`ray.train.get_checkpoint()` and boosts only the rounds still to go.

The Ray Train setup (object store, configs, fault tolerance, the controller's fast poll, rank 0's
checkpoint reports) is shared with the torch families: pipeline.models.raytrain. What is
xgboost's own: a single worker gets the plan's CPUs, one fewer than the node has (the spare is
for Ray Data), but while xgboost trains on arrays from the object store nothing reads through
Ray Data: its threads use that core too (`_threads`; `openmp_threads` lifts the OMP_NUM_THREADS
cap Ray sets, which would otherwise hold xgboost to the reserved CPUs whatever `nthread` says).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models import raytrain
from pipeline.models.base import TrainData, TrainedModel

_SPEC_ALIASES = {"n_estimators": "num_boost_round", "learning_rate": "eta"}


class XGBoostModel(TrainedModel):
    family = "xgboost"

    def __init__(self, params: dict[str, Any], booster, n_classes: int):
        super().__init__(params)
        self.booster = booster
        self.n_classes = n_classes

    def predict_scores(self, X: np.ndarray) -> np.ndarray:

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
        elif key == "checkpoint_every":
            continue   # rayline's, not xgboost's: see checkpoint_interval
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


def checkpoint_interval(rounds: int, given: dict[str, Any]) -> int:
    """Boosting rounds between checkpoints: at most ~10 a run (each writes and copies the model)."""
    return int(given.get("checkpoint_every") or max(10, rounds // 10))


_MAXIMIZE = ("auc", "aucpr", "pre", "map", "ndcg")   # as xgboost's EarlyStopping decides


def _metric_name(params: dict[str, Any]) -> str:
    metric = params["eval_metric"]
    return metric[-1] if isinstance(metric, (list, tuple)) else metric   # xgboost stops on the last


class _Progress:
    """Early stopping that survives a restart: its state is checkpointed beside the model, so a
    resumed run knows the best round so far (xgboost's EarlyStopping would start counting anew)."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.best_score: float | None = state.get("best_score")
        self.best_rounds: int = state.get("best_rounds", 0)
        self.start_round: int = state.get("rounds", 0)
        self.stopped: bool = state.get("stopped", False)

    def state(self, rounds: int) -> dict:
        return {"best_score": self.best_score, "best_rounds": self.best_rounds, "rounds": rounds,
                "stopped": self.stopped}


def _report(metrics: dict, booster, progress: _Progress, rank: int) -> None:
    def write(folder: Path) -> None:
        booster.save_model(str(folder / "model.ubj"))
        (folder / "progress.json").write_text(json.dumps(progress.state(booster.num_boosted_rounds())))

    raytrain.report(metrics, rank, write)


def _callback(config: dict, progress: _Progress, rank: int):
    """Early stopping on validation plus a checkpoint every `checkpoint_every` rounds, reported
    from inside xgboost's loop (every worker reaches the same rounds, so reports stay paired)."""
    import xgboost

    metric = _metric_name(config["params"])
    maximize = metric != "mape" and metric.startswith(_MAXIMIZE)
    every, early, total = config.get("checkpoint_every", 0), config["early"], config["rounds"]

    class Checkpointing(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch: int, evals_log) -> bool:
            rounds = model.num_boosted_rounds()
            score = float(evals_log["validation"][metric][-1])
            if progress.best_score is None or (score > progress.best_score if maximize
                                               else score < progress.best_score):
                progress.best_score, progress.best_rounds = score, rounds
            progress.stopped = bool(early) and rounds - progress.best_rounds >= early
            if every and rounds % every == 0 and rounds < total and not progress.stopped:
                _report(_metrics(metric, progress, rounds, final=False), model, progress, rank)
            raytrain.crash_if_asked(config, "_test_kill_after_round", rounds, rank)
            return progress.stopped

    return Checkpointing()


def _metrics(metric: str, progress: _Progress, rounds: int, final: bool) -> dict[str, Any]:
    best = progress.best_score if progress.best_score is not None else float("nan")
    return {"rounds": rounds, f"validation_{metric}": best, "start_round": progress.start_round,
            "final": final}


def _train_fn(config: dict) -> None:
    """Runs in each Ray Train worker: its share of train, all of validation, both from the
    object store. Resumes from `ray.train.get_checkpoint()` after a restart, with the rounds
    still to go."""
    import xgboost

    rank, world = raytrain.rank_and_world()
    booster, progress = None, _Progress()
    with raytrain.restored() as ckpt:
        if ckpt is not None:
            booster = xgboost.Booster()
            booster.load_model(str(ckpt / "model.ubj"))
            progress = _Progress(json.loads((ckpt / "progress.json").read_text()))
    X_train, y_train, X_val, y_val = raytrain.arrays(config)
    params = {**config["params"]}
    if params.get("device") != "cuda":
        params["nthread"] = _threads(params["nthread"], world)
    nthread = params["nthread"]
    done = booster.num_boosted_rounds() if booster is not None else 0
    with openmp_threads(nthread):
        # Each worker trains on its share of the rows; xgboost's collective joins the histograms.
        dtrain = xgboost.DMatrix(X_train[rank::world], label=y_train[rank::world], nthread=nthread)
        dval = xgboost.DMatrix(X_val, label=y_val, nthread=nthread)
        if done < config["rounds"] and not progress.stopped:
            # xgb_model continues the checkpointed booster: num_boost_round counts the rounds to add.
            booster = xgboost.train(params, dtrain, num_boost_round=config["rounds"] - done,
                                    evals=[(dval, "validation")], xgb_model=booster,
                                    callbacks=[_callback(config, progress, rank)], verbose_eval=False)
    rounds = booster.num_boosted_rounds()
    if config["early"] and 0 < progress.best_rounds < rounds:
        booster = booster[: progress.best_rounds]
    _report(_metrics(_metric_name(config["params"]), progress, booster.num_boosted_rounds(), True),
            booster, progress, rank)


def _threads(planned: int, world: int) -> int:
    """xgboost threads for this worker: the plan's CPUs, plus the one it keeps free for Ray Data
    when a single worker trains (the arrays came through the object store, so nothing reads
    through Ray Data meanwhile and that core would idle: on 2 CPUs, 2 threads instead of 1),
    never more than the cores this process may run on (Ray's CPUs are labels: a node may
    declare more than it has, and an OpenMP team larger than the cores only spins)."""
    threads = planned + (1 if world == 1 else 0)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or threads
    return max(1, min(threads, cores))


@contextmanager
def openmp_threads(n: int):
    """Let xgboost's OpenMP use `n` threads in this thread. Ray sets OMP_NUM_THREADS to a
    worker's (or Tune trial's) CPUs before xgboost loads, and that caps xgboost's `nthread`:
    measured here, a 1-CPU worker with nthread=2 trained no faster than with 1."""
    from threadpoolctl import threadpool_limits   # scikit-learn's dependency

    with threadpool_limits(limits=max(1, int(n)), user_api="openmp"):
        yield


def train_xgboost(data: TrainData, given: dict[str, Any],
                  test_hooks: dict[str, Any] | None = None) -> XGBoostModel:
    """One XGBoostTrainer run. `test_hooks` (tests only) go into train_loop_config, e.g.
    {"_test_kill_after_round": 25, "_test_kill_marker": path} to crash a worker once."""
    import xgboost
    from ray.train.xgboost import XGBoostTrainer

    plan = data.plan
    params, rounds, early = booster_params(given, data.problem_type, data.n_classes, data.seed,
                                           plan.threads, plan.use_gpu)
    config = {"params": params, "rounds": rounds, "early": early, "data": raytrain.put_arrays(data),
              "checkpoint_every": checkpoint_interval(rounds, given), **(test_hooks or {})}
    result = raytrain.fit(XGBoostTrainer, _train_fn, config, data, "xgboost")
    with result.checkpoint.as_directory() as ckpt:
        booster = xgboost.Booster()
        booster.load_model(str(Path(ckpt) / "model.ubj"))
    booster.set_param({"nthread": 1, "device": "cpu"})  # serving and evaluation run on CPU
    saved = {**given, "n_classes": data.n_classes, "rounds_trained": booster.num_boosted_rounds()}
    model = XGBoostModel(saved, booster, data.n_classes)
    model.training_report = dict(result.metrics or {})
    return model
