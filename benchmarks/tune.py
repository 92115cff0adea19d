"""Claim: rayline's hyperparameter search (`pipeline.tuning.run_tuning`: Ray Tune + OptunaSearch,
the function `rayline run` / `rayline tune` call for a spec's `tuning` section) against the same
search written as plain in-process Optuna (TPE, xgboost with nthread=2), on one machine.

    .venv/bin/python benchmarks/tune.py [--rows 100000] [--trials 20] [--repeats 2]

Data: `--rows` training rows x 28 float32 features and a binary label, plus `--rows // 5`
validation rows, from the generator of benchmarks/train_xgboost.py (cached parquet under
$RAYLINE_BENCH_CACHE), read into arrays once, before any timing: both paths get the same arrays.

The search, identical on both sides: `--trials` trials of xgboost (hist, binary:logistic, up to
100 rounds with early stopping after 10 rounds without a better validation logloss), TPE seeded
with the same seed over learning_rate [0.01, 0.3, log], max_depth [3, 8, int], min_child_weight
[1, 10, log], subsample [0.5, 1], colsample_bytree [0.5, 1]; objective: validation AUC
(maximised). `early_stopping: none` in the spec (no ASHA), so both sides run the same trials to
the end and their best scores can be compared: with equal scores TPE proposes the same
configurations on both sides.

  project   run_tuning(spec, TrainData, stages): the Tuner with the concurrency and threads the
            spec's `max_concurrent_trials: auto` gives on this cluster, one Tune trial per
            configuration (DMatrix, fit, metrics, report), trials table and best trial.
            Timed from the call to its return; MLflow logging (records.log_tuning) is not part
            of it.
  baseline  optuna.create_study(TPESampler(seed)) + study.optimize(objective, n_trials), with
            both DMatrix built once beforehand (inside the timing).

Ray is started once beforehand and one untimed 2-trial warm-up search runs first. The paths
alternate, `--repeats` times each (2 by default: a search is a minute or more here); medians are
reported. The last line is

    tune: ratio=<baseline s / project s> project=<s> baseline=<s> best_project=<auc> best_baseline=<auc> trials=<n>

ratio > 1 means the project's search is faster; best_* are each side's best validation AUC
(from the last repetition; every repetition gives the same configurations and scores when the
two sides agree).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import train_xgboost as T  # noqa: E402  (the dataset generator)

SEED = 20261204
ROUNDS, EARLY = 100, 10


def spec_text(path: Path, trials: int) -> str:
    return f"""name: bench_tune
seed: {SEED}
sources:
  - name: synthetic
    type: files
    path: {path}
    format: parquet
target: {T.LABEL}
problem_type: classification
baseline_models: [xgboost]
model_params:
  xgboost: {{n_estimators: {ROUNDS}, early_stopping_rounds: {EARLY}}}
tuning:
  method: optuna
  objective: maximize_auc
  n_trials: {trials}
  early_stopping: none
  models: [xgboost]
  search_space:
    learning_rate: [0.01, 0.3, log]
    max_depth: [3, 8, int]
    min_child_weight: [1, 10, log]
    subsample: [0.5, 1.0, uniform]
    colsample_bytree: [0.5, 1.0, uniform]
"""


def load_spec(path: Path, trials: int):
    from pipeline.spec import parse_spec

    return parse_spec(spec_text(path, trials), "bench-tune.yaml", env={}, base_dir=str(path))


# --------------------------------------------------------------------------- the two paths

def run_baseline(arrays, trials: int) -> tuple[float, float, list]:
    """Plain Optuna in this process: the search a user writes without Ray."""
    import optuna
    import xgboost
    from sklearn.metrics import roc_auc_score

    X, y, Xv, yv = arrays
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    dtrain = xgboost.DMatrix(X, label=y, nthread=2)
    dval = xgboost.DMatrix(Xv, label=yv, nthread=2)

    def objective(trial):
        params = {"eta": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
                  "max_depth": trial.suggest_int("max_depth", 3, 8),
                  "min_child_weight": trial.suggest_float("min_child_weight", 1, 10, log=True),
                  "subsample": trial.suggest_float("subsample", 0.5, 1.0),
                  "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0)}
        booster = xgboost.train({"tree_method": "hist", "objective": "binary:logistic",
                                 "eval_metric": "logloss", "nthread": 2, "seed": SEED, **params},
                                dtrain, num_boost_round=ROUNDS, evals=[(dval, "validation")],
                                early_stopping_rounds=EARLY, verbose_eval=False)
        booster = booster[: booster.best_iteration + 1]
        return float(roc_auc_score(yv, booster.inplace_predict(Xv)))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED))
    study.optimize(objective, n_trials=trials)
    seconds = time.perf_counter() - started
    return seconds, float(study.best_value), [t.value for t in study.trials]


def run_project(spec, data, stages) -> tuple[float, float, list, object]:
    from pipeline.tuning import run_tuning

    started = time.perf_counter()
    result = run_tuning(spec, data, stages)
    seconds = time.perf_counter() - started
    return seconds, float(result.best["xgboost"]["value"]), \
        [t.get(result.plan.key) for t in result.trials], result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # this process only, as the tests do
    os.environ.setdefault("RAY_worker_niceness", "0")   # see benchmarks/README.md
    os.environ.pop("RAY_ADDRESS", None)                 # a local Ray that dies with this process
    path = T.dataset(args.rows, max(1, args.rows // 5))
    X, y, Xv, yv = T.read_arrays(path, args.rows)
    arrays = (X.astype(np.float64), y, Xv.astype(np.float64), yv)   # as the Features stage gives
    spec = load_spec(path, args.trials)
    warm_spec = load_spec(path, 2)

    import optuna  # noqa: F401  (imports outside the timings, for both paths)
    import xgboost  # noqa: F401
    from rich.console import Console

    from pipeline import execution
    from pipeline.progress import Stages
    from pipeline.models import TrainData

    execution.quiet_libraries()
    started = time.perf_counter()
    execution.ensure_ray()
    import ray

    cpus, nodes, gpus = execution.cluster_shape()
    plan = execution.plan_training(spec.scaling, cpus, nodes, gpus)
    print(f"ray {ray.__version__}: local, {cpus:g} CPUs, started in {time.perf_counter() - started:.1f} s "
          f"(not timed); worker niceness {os.environ['RAY_worker_niceness']}; optuna "
          f"{optuna.__version__}, xgboost {xgboost.__version__}; load average {os.getloadavg()[0]:.2f}")
    workdir = tempfile.mkdtemp(prefix="rayline-bench-tune-")
    os.chdir(workdir)                                   # Tune's state goes to ./.rayline/ray_results
    data = TrainData(X_train=arrays[0], y_train=arrays[1], X_val=arrays[2], y_val=arrays[3],
                     feature_names=T.FEATURES, problem_type="classification", n_classes=2,
                     seed=SEED, plan=plan, storage_path=str(Path(workdir) / "ray_results"),
                     run_tag="bench")
    quiet = Stages(Console(stderr=True, quiet=True))

    seconds, best, _, result = run_project(warm_spec, data, quiet)
    print(f"project warm-up, 2 trials (not timed): {seconds:.2f} s; "
          f"{result.concurrent} trial(s) at a time x {result.cpus_per_trial} CPU", flush=True)

    base_times, proj_times = [], []
    base = proj = None
    for i in range(args.repeats):
        base = run_baseline(arrays, args.trials)
        base_times.append(base[0])
        print(f"  baseline #{i + 1}: {base[0]:6.2f} s  best AUC {base[1]:.5f}", flush=True)
        proj = run_project(spec, data, quiet)
        proj_times.append(proj[0])
        overhead = proj[3].overhead_per_trial
        print(f"  project  #{i + 1}: {proj[0]:6.2f} s  best AUC {proj[1]:.5f}  "
              f"({proj[3].concurrent} at a time; trial-slot time not fitting: "
              f"{overhead if overhead is None else round(overhead, 2)} s/trial; "
              f"load {os.getloadavg()[0]:.2f})", flush=True)

    same = [a is not None and b is not None and abs(a - b) < 1e-9 for a, b in zip(base[2], proj[2])]
    print(f"{args.rows:,} training rows x {len(T.FEATURES)}, {len(Xv):,} validation rows, "
          f"{args.trials} trials each; per-trial AUC equal on {sum(same)} of {len(same)} trials")
    if not all(same):
        print("  baseline:", [round(v, 5) for v in base[2]])
        print("  project: ", [None if v is None else round(v, 5) for v in proj[2]])
    base_t, proj_t = statistics.median(base_times), statistics.median(proj_times)
    print(f"\nmedian of {args.repeats}: baseline (Optuna in-process, nthread=2) {base_t:.2f} s = "
          f"{base_t / args.trials:.2f} s/trial; project (Ray Tune + OptunaSearch) {proj_t:.2f} s = "
          f"{proj_t / args.trials:.2f} s/trial")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"tune: ratio={base_t / proj_t:.3f} project={proj_t:.2f} baseline={base_t:.2f} "
          f"best_project={proj[1]:.5f} best_baseline={base[1]:.5f} trials={args.trials}")
    import shutil

    os.chdir("/")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
