"""Claim: rayline's xgboost training path (Ray Data reads the parquet, the arrays go to one Ray
Train XGBoostTrainer run through `pipeline.models.xgboost_model.train_xgboost`, the function
`rayline run` calls for the xgboost family) against the plain single-process script a user would
otherwise write (pyarrow.parquet.read_table -> numpy -> xgboost.train with nthread=2).

    .venv/bin/python benchmarks/train_xgboost.py [--rows 1000000] [--rounds 100] [--repeats 3]

Data: one parquet dataset (a directory of 250k-row files) of `--rows` training rows followed
by `--rows // 10` validation rows, 28 float32 features and a binary label, synthetic and seeded,
written once under $RAYLINE_BENCH_CACHE (default /tmp/rayline-bench). Both paths read the whole
dataset once and split it there (the first `--rows` rows train), as `rayline run` reads its
source once and splits it. Both train the same model: tree_method hist, max_depth 6, eta 0.1,
binary:logistic, `--rounds` rounds (no early stopping, so both run every round), logloss on the
validation rows evaluated every round.

The project's path, timed end to end:
  read   `pipeline.sources.read_sources` (Ray Data read_parquet, materialised, as `rayline run`
         ingests) -> `Dataset.to_pandas()` (as `pipeline.data.prepare` does) -> float64 matrices
         (what the Features stage hands to training) -> training / validation rows
  train  `train_xgboost(TrainData, model_params)`: ray.put of the arrays, XGBoostTrainer with
         the training plan `rayline run` would make on this cluster (`plan_training`), its
         checkpoints, early-stopping bookkeeping and final checkpoint, the booster loaded back.
The baseline: read (pyarrow) and train (DMatrix + xgboost.train, nthread=2).

One setting, printed at the start: RAY_API_SERVER_ADDRESS points at this process's own local
Ray (which has no dashboard). Ray Train's PlacementGroupCleaner looks its controller up through
Ray's state API every second; without an address that API picks the newest Ray instance on the
host, and on a machine that other Ray clusters share it asks one of theirs, and stopping the
cleaner can stall 12 s at the end of a fit (most fits, measured here). With the address set the lookups fail at once, as
they do where only one Ray runs. `--as-is` leaves the environment alone.

Both run in this process, alternately, `--repeats` times each (3 by default: a project run is
~25 s here); medians are reported. Ray is started once beforehand and one untimed warm-up of
the project's path (10 rounds) runs first; Ray Train's start of its controller and worker group
happens in every timed run, as it does in every `rayline run`. The last line is

    train_xgboost: ratio=<baseline s / project s> project=<s> baseline=<s> rows=<n> rounds=<r>

ratio > 1 means the project's path is faster (ratio = project speed / baseline speed). The
script also prints the validation logloss of both boosters: the two paths must train an
equally good model, not just take the same time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

FEATURES = [f"x{i:02d}" for i in range(28)]
LABEL = "label"
SEED = 20261203
CHUNK = 250_000
FORMAT_VERSION = 2              # bump when the generator changes: the cache key includes it
VAL_OFFSET = 1 << 40            # validation rows come from generators no training row uses
BASE_PARAMS = {"tree_method": "hist", "max_depth": 6, "eta": 0.1, "objective": "binary:logistic",
               "eval_metric": "logloss"}


# --------------------------------------------------------------------------- the data

def _weights() -> np.ndarray:
    return np.random.default_rng(SEED).normal(0.0, 0.6, 28)


def _chunk(start: int, rows: int):
    """Rows [start, start+rows): 28 float32 features (some correlated, some skewed) and a label
    drawn from a logistic model with interactions, so trees have something to find."""
    import pyarrow as pa

    rng = np.random.default_rng([SEED, start])
    X = rng.standard_normal((rows, 28), dtype=np.float32)
    X[:, 14:21] += 0.6 * X[:, 0:7]
    X[:, 21:] = np.exp(0.5 * X[:, 21:])
    w = _weights()
    logit = (X[:, :14].astype(np.float64) @ w[:14] + 0.8 * X[:, 14] * X[:, 15]
             + np.sin(2.0 * X[:, 16]) + 1.2 * (X[:, 17] > 0.5) - 0.5 * np.abs(X[:, 18])
             + 0.3 * np.log(X[:, 21]) * X[:, 22])
    label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    cols = {name: X[:, j] for j, name in enumerate(FEATURES)}
    cols[LABEL] = label
    return pa.table(cols)


def dataset(rows: int, val_rows: int) -> Path:
    """A directory of parquet files: `rows` training rows, then `val_rows` validation rows (from
    generators no training row uses), generated once and cached, one 250k-row file at a time."""
    import pyarrow.parquet as pq

    where = C.cache_dir() / f"xgb-v{FORMAT_VERSION}-{rows}-{val_rows}"
    done = where / "_COMPLETE"
    if done.exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    chunks = [(start, min(CHUNK, rows - start)) for start in range(0, rows, CHUNK)]
    chunks += [(VAL_OFFSET + start, min(CHUNK, val_rows - start)) for start in range(0, val_rows, CHUNK)]
    for index, (start, count) in enumerate(chunks):
        tmp = where / f".part-{index:05d}.parquet.tmp"
        pq.write_table(_chunk(start, count), tmp, row_group_size=CHUNK)
        os.replace(tmp, where / f"part-{index:05d}.parquet")   # file order = row order
    done.write_text(f"{rows} {val_rows}\n")
    print(f"generated {rows:,} + {val_rows:,} rows in {where} ({time.perf_counter() - started:.1f} s)",
          flush=True)
    return where


def read_arrays(path: Path, rows: int):
    """The baseline's reading: one pyarrow table -> float32 matrix and labels, split at `rows`:
    (X_train, y_train, X_val, y_val)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    X = np.column_stack([table.column(c).to_numpy() for c in FEATURES])
    y = table.column(LABEL).to_numpy()
    return X[:rows], y[:rows], X[rows:], y[rows:]


def spec_for(path: Path):
    from pipeline.spec import parse_spec

    text = "\n".join([
        "name: bench_train_xgboost", "sources:", "  - name: synthetic", "    type: files",
        f"    path: {path}", "    format: parquet", f"target: {LABEL}",
        "problem_type: classification", "baseline_models: [xgboost]", ""])
    return parse_spec(text, "bench-spec.yaml", env={}, base_dir=str(path))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64).reshape(-1), 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# --------------------------------------------------------------------------- the two paths

def run_baseline(path: Path, rows: int, rounds: int, X_val: np.ndarray, y_val: np.ndarray) -> tuple[C.Timer, dict]:
    import xgboost

    t = C.Timer(cpu=True)
    with t.stage("read"):
        X, y, Xv, yv = read_arrays(path, rows)
    with t.stage("train"):
        dtrain = xgboost.DMatrix(X, label=y, nthread=2)
        dval = xgboost.DMatrix(Xv, label=yv, nthread=2)
        booster = xgboost.train({**BASE_PARAMS, "nthread": 2, "seed": SEED}, dtrain,
                                num_boost_round=rounds, evals=[(dval, "validation")],
                                verbose_eval=False)
    return t, {"rows": X.shape[0], "rounds": booster.num_boosted_rounds(),
               "val_logloss": logloss(y_val, booster.inplace_predict(X_val))}


def run_project(spec, rows: int, plan, rounds: int, storage: str, tag: str) -> tuple[C.Timer, dict]:
    from pipeline.models import TrainData
    from pipeline.models.xgboost_model import train_xgboost
    from pipeline.sources import read_sources

    t = C.Timer(cpu=True)
    with t.stage("read"):
        frame = read_sources(spec.sources, spec.origin).to_pandas()          # as pipeline.data.prepare does
        X = frame[FEATURES].to_numpy(dtype=np.float64)
        y = frame[LABEL].to_numpy(dtype=np.int64)
        del frame
    with t.stage("train"):
        data = TrainData(X_train=X[:rows], y_train=y[:rows], X_val=X[rows:], y_val=y[rows:],
                         feature_names=FEATURES, problem_type="classification", n_classes=2,
                         seed=SEED, plan=plan, storage_path=storage, run_tag=tag)
        model = train_xgboost(data, {"n_estimators": rounds, "max_depth": 6, "learning_rate": 0.1,
                                     "early_stopping_rounds": 0})
    return t, {"rows": data.X_train.shape[0], "rounds": model.booster.num_boosted_rounds(),
               "val_logloss": logloss(data.y_val, model.predict_scores(data.X_val)[:, 1]),
               "report": model.training_report}


# --------------------------------------------------------------------------- reporting

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--as-is", action="store_true",
                        help="leave Ray's state API address alone (see the docstring)")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # this process only, as the tests do
    # Ray's workers run at niceness 15 by default, the baseline in this process at 0: on a
    # shared machine that alone would starve the project's path (see benchmarks/README.md).
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.pop("RAY_ADDRESS", None)                 # a local Ray that dies with this process
    isolated = not args.as_is and "RAY_API_SERVER_ADDRESS" not in os.environ
    if isolated:
        # Ray Train's PlacementGroupCleaner asks the state API every second whether the
        # controller lives; with no address it picks the newest Ray instance on the host. Where
        # other Ray clusters run (a shared machine), that is someone else's, and stopping the
        # cleaner then can stall 12 s at the end of a fit. This cluster has no dashboard, so
        # point the lookups at it: they fail at once, as on a machine with one Ray.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{sock.getsockname()[1]}"
    path = dataset(args.rows, max(1, args.rows // 10))
    spec = spec_for(path)
    _, _, X_val, y_val = read_arrays(path, args.rows)
    import pandas  # noqa: F401  (imports outside the timings, for both paths)
    import xgboost  # noqa: F401

    from pipeline import execution

    execution.quiet_libraries()
    started = time.perf_counter()
    execution.ensure_ray()
    import ray

    cpus, nodes, gpus = execution.cluster_shape()
    plan = execution.plan_training(spec.scaling, cpus, nodes, gpus)
    print(f"ray {ray.__version__}: local, {cpus:g} CPUs, started in {time.perf_counter() - started:.1f} s "
          f"(not timed); worker niceness {os.environ['RAY_worker_niceness']}, this process "
          f"{os.nice(0)}; xgboost {xgboost.__version__}; load average {os.getloadavg()[0]:.2f}")
    print("Ray's state API: " + ("this cluster's (no dashboard: lookups fail at once, as with one Ray "
                                 "on the host)" if isolated else "as found (--as-is)"))
    print(f"training plan: {plan.num_workers} worker(s) x {plan.cpus_per_worker:g} CPU — {plan.reason}")

    storage = tempfile.mkdtemp(prefix="rayline-bench-xgb-")
    warm, _ = run_project(spec, args.rows, plan, 10, storage, "warmup")
    print(f"project warm-up, 10 rounds (not timed): {warm.total:.2f} s  [{C.fmt_stages(warm.stages)}]",
          flush=True)

    base_runs, proj_runs = [], []
    base_info = proj_info = None
    for i in range(args.repeats):
        t, base_info = run_baseline(path, args.rows, args.rounds, X_val, y_val)
        base_runs.append(t)
        print(f"  baseline #{i + 1}: {t.total:6.2f} s  [{C.fmt_stages(t.stages)}]  cpu {t.total_cpu:6.2f} s"
              f"  val logloss {base_info['val_logloss']:.5f}", flush=True)
        t, proj_info = run_project(spec, args.rows, plan, args.rounds, storage, f"run{i}")
        proj_runs.append(t)
        print(f"  project  #{i + 1}: {t.total:6.2f} s  [{C.fmt_stages(t.stages)}]  cpu {t.total_cpu:6.2f} s"
              f"  val logloss {proj_info['val_logloss']:.5f}  (load {os.getloadavg()[0]:.2f})", flush=True)

    assert base_info["rows"] == proj_info["rows"] == args.rows, (base_info, proj_info)
    assert base_info["rounds"] == proj_info["rounds"] == args.rounds, (base_info, proj_info)
    report = proj_info["report"]
    print(f"rows {args.rows:,} x {len(FEATURES)}, {args.rounds} rounds both; validation logloss "
          f"baseline {base_info['val_logloss']:.5f} / project {proj_info['val_logloss']:.5f}; "
          f"project's last report: {report}")

    base_t = statistics.median(t.total for t in base_runs)
    proj_t = statistics.median(t.total for t in proj_runs)
    print(f"\nmedian of {args.repeats} (wall seconds per stage; CPU seconds of the process tree below):")
    print(f"  baseline (pyarrow + xgboost.train, nthread=2): {base_t:6.2f} s  [{C.fmt_stages(C.median_stages(base_runs))}]")
    print(f"  project  (Ray Data + Ray Train XGBoostTrainer): {proj_t:6.2f} s  [{C.fmt_stages(C.median_stages(proj_runs))}]")
    print(f"  baseline cpu: [{C.fmt_stages(C.median_stages(base_runs, cpu=True))}]")
    print(f"  project  cpu: [{C.fmt_stages(C.median_stages(proj_runs, cpu=True))}]")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"train_xgboost: ratio={base_t / proj_t:.3f} project={proj_t:.2f} baseline={base_t:.2f} "
          f"rows={args.rows} rounds={args.rounds}")
    import shutil

    shutil.rmtree(storage, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
