"""Running the search: Ray Tune's Tuner (fresh, or restored with --resume), the trials table it
leaves, and each family's best trial."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from ray.tune import Callback

from pipeline.errors import NotFound
from pipeline.spec import SearchChoice, SearchRange, Spec, SpecError
from pipeline.tuning.searchers import make_searcher
from pipeline.tuning.space import SearchPlan, search_plan, trial_resources, trial_threads
from pipeline.tuning.trial import ROUND_KEY, TrialData, run_trial, trial_dirname

REPORTS_PER_TRIAL = 10              # xgboost: at most this many intermediate reports


class CannotResume(NotFound):
    """`rayline tune --resume` with no search to continue, or one started differently."""

    title = "cannot resume"


@dataclass
class TuningResult:
    plan: SearchPlan
    trials: list[dict]                        # one row per trial, by trial index
    best: dict[str, dict]                     # family -> {"trial", "params", "value"}
    experiment_path: str
    seconds: float                            # wall time of this session's Tuner.fit()
    concurrent: int
    cpus_per_trial: int
    resumed: bool = False

    def tuned_params(self, model_params: dict[str, dict]) -> dict[str, dict]:
        """Per tuned family: its model_params with the best trial's values over them."""
        return {f: {**model_params.get(f, {}), **b["params"]} for f, b in self.best.items()}

    @property
    def overhead_per_trial(self) -> Optional[float]:
        """Trial-slot time not spent fitting, per trial: (wall x concurrent - time in fits) /
        trials: Tune's scheduling, actor start, data, reports, and slots left idle at the end.
        None after a resume (the first session's fits are not in this wall time)."""
        if self.resumed or not self.trials:
            return None
        fitted = sum(t.get("fit_seconds") or 0.0 for t in self.trials)
        return max(0.0, (self.seconds * self.concurrent - fitted) / len(self.trials))


def experiment_path(spec: Spec) -> Path:
    """Tune's state for this spec, under the working directory like the rest of .rayline."""
    return Path(".rayline/ray_results").resolve() / f"{spec.name}-tune"


def trial_data(spec: Spec, data, plan: SearchPlan, threads: int) -> TrialData:
    names = [m for m in spec.metric_names if m != "confusion_matrix"]
    builtin = ("accuracy", "precision", "recall", "f1_score", "auc_roc", "log_loss") \
        if spec.problem_type == "classification" else ("mse", "rmse", "mae", "r2_score", "mape")
    if plan.metric in builtin and plan.metric not in names:
        names.append(plan.metric)
    report_every = 0
    if spec.tuning.early_stopping == "asha" and "xgboost" in plan.families:
        report_every = max(1, _max_rounds(spec, plan) // REPORTS_PER_TRIAL)
    return TrialData(X_train=data.X_train, y_train=data.y_train, X_val=data.X_val, y_val=data.y_val,
                     problem_type=spec.problem_type, n_classes=data.n_classes, seed=spec.seed,
                     threads=threads, key=plan.key, metric=plan.metric, names=names,
                     custom=list(spec.evaluation.custom), model_params=dict(spec.model_params),
                     report_every=report_every)


def _max_rounds(spec: Spec, plan: SearchPlan) -> int:
    """The most boosting rounds an xgboost trial can run (ASHA's max_t)."""
    from pipeline.models.xgboost_model import booster_params

    space = plan.spaces.get("xgboost", {})
    _, rounds, _ = booster_params(spec.model_params.get("xgboost", {}), spec.problem_type, 2,
                                  spec.seed, 1, False)
    for name in ("n_estimators", "num_boost_round"):
        dim = space.get(name)
        if isinstance(dim, SearchRange):
            rounds = int(dim.high)
        elif isinstance(dim, SearchChoice):
            rounds = max(int(v) for v in dim.values)
    return max(1, rounds)


def run_tuning(spec: Spec, data, stages, resume: bool = False) -> TuningResult:
    """Run (or `resume`) the spec's search on TrainData `data`; nothing is logged to MLflow."""
    import shutil

    from ray import tune

    from pipeline import execution

    plan = search_plan(spec)
    for note in plan.notes:
        stages.info(note)
    cpus, nodes, _ = execution.cluster_shape()
    concurrent, per, why = trial_resources(spec.tuning.max_concurrent_trials, spec.tuning.n_trials, cpus)
    threads = trial_threads(concurrent, per, cpus, nodes)
    if threads != per:
        why += f", {threads} threads each"
    payload = trial_data(spec, data, plan, threads)
    trainable = tune.with_resources(tune.with_parameters(run_trial, data=payload), {"cpu": per})
    path = experiment_path(spec)
    identity = _identity(spec, plan, payload)
    # Save Tune's state often: a killed search resumes from its last save. Tune's own console
    # output (a boxed summary even at verbose=0) gives way to our stage lines.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if logging.getLogger("ray").getEffectiveLevel() > logging.INFO:  # not --verbose
        # Failed trials are reported in the table and the error; not as tracebacks on the way.
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    if resume:
        _check_resumable(path, identity)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        if path.exists():
            stages.info(f"replacing the previous experiment at {path} (--resume continues one)")
            shutil.rmtree(path)
        path.mkdir(parents=True)
        (path / IDENTITY).write_text(json.dumps(identity, indent=2, default=str))
        tuner = tune.Tuner(trainable, tune_config=_tune_config(spec, plan, concurrent),
                           run_config=tune.RunConfig(
                               name=path.name, storage_path=str(path.parent), verbose=0,
                               callbacks=[_Progress()],
                               failure_config=tune.FailureConfig(max_failures=0)))
    stages.info(f"tuning {', '.join(plan.families)}: {spec.tuning.method}, "
                f"{'maximize' if plan.mode == 'max' else 'minimize'} validation {plan.metric}, "
                f"{spec.tuning.n_trials} trials; {why}")
    _Progress.sink = (stages, spec.tuning.n_trials, plan)
    title = f"Tune {', '.join(plan.families)}" + (" (resumed)" if resume else "")
    try:
        with stages.stage(title) as note:
            start = time.perf_counter()
            grid = tuner.fit()
            seconds = time.perf_counter() - start
            trials = trial_rows(grid, plan)
            result = TuningResult(plan, trials, best_trials(trials, plan), str(path), seconds,
                                  concurrent, per, resumed=resume)
            done = sum(t["status"] == "done" for t in trials)
            note(f"{len(trials)} trials ({done} done) in {seconds:.1f} s"
                 + (f", {seconds / len(trials):.2f} s/trial" if trials and not resume else ""))
    finally:
        _Progress.sink = None
    if not result.best:
        errors = [t["error"] for t in trials if t.get("error")]
        raise SpecError([f"{spec.where('tuning', 'search_space')}: no tuning trial produced a "
                         f"finite {plan.metric}" + (f"; {len(errors)} failed, the first with: {errors[0]}"
                                                     if errors else "")])
    return result


IDENTITY = "rayline-search.json"


def _identity(spec: Spec, plan: SearchPlan, payload: TrialData) -> dict:
    """What a resumed search must share with the one it continues: the search and the data."""
    digest = hashlib.sha256()
    for array in (payload.X_train, payload.y_train, payload.X_val, payload.y_val):
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"tuning": spec.tuning.model_dump(mode="json"), "seed": spec.seed,
            "model_params": spec.model_params, "families": plan.families,
            "data_sha256": digest.hexdigest()}


def _check_resumable(path: Path, identity: dict) -> None:
    from ray import tune

    if not tune.Tuner.can_restore(str(path)):
        raise CannotResume(f"no tuning experiment to resume at {path}: run `rayline tune` first")
    try:
        before = json.loads((path / IDENTITY).read_text())
    except (OSError, ValueError):
        before = None
    now = json.loads(json.dumps(identity, default=str))
    if before != now:
        changed = sorted(k for k in now if before is None or before.get(k) != now[k])
        raise CannotResume(f"the experiment at {path} was started with a different "
                          f"{' / '.join(changed) or 'spec'} (data_sha256: the split and features); "
                          "run without --resume to start over")


def _tune_config(spec: Spec, plan: SearchPlan, concurrent: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    scheduler = None
    if spec.tuning.early_stopping == "asha" and "xgboost" in plan.families:
        max_t = _max_rounds(spec, plan)
        # First rung at a fifth of the rounds: a slow learning rate still looks poor that early,
        # but no longer hopeless. Only xgboost's reports carry ROUND_KEY; ASHA skips the rest.
        grace = max(1, max_t // REPORTS_PER_TRIAL, max_t // 5)
        scheduler = ASHAScheduler(time_attr=ROUND_KEY, max_t=max_t, grace_period=grace,
                                  reduction_factor=3)
    return tune.TuneConfig(
        search_alg=make_searcher(spec.tuning.method, plan, spec.seed), scheduler=scheduler,
        metric=plan.key, mode=plan.mode, num_samples=spec.tuning.n_trials,
        max_concurrent_trials=concurrent, time_budget_s=spec.tuning.time_budget,
        reuse_actors=True, trial_dirname_creator=trial_dirname)


def trial_rows(grid, plan: SearchPlan) -> list[dict]:
    rows = []
    for result in grid:
        config, metrics = result.config or {}, result.metrics or {}
        if "family" not in config:
            continue
        history = []
        df = result.metrics_dataframe
        if df is not None and ROUND_KEY in df.columns and plan.key in df.columns:
            part = df[df[ROUND_KEY].notna()]
            history = [(int(r), float(v)) for r, v in zip(part[ROUND_KEY], part[plan.key])]
        status = ("error" if result.error else "done" if metrics.get("final") else
                  "stopped" if metrics else "not run")
        rows.append({
            "trial": config.get("index"), "trial_id": metrics.get("trial_id") or Path(result.path).name,
            "family": config["family"], "params": config["params"], "status": status,
            plan.key: finite(metrics.get(plan.key)),
            "metrics": {k: v for k, v in metrics.items() if k.startswith("val_")},
            "rounds": metrics.get("rounds_trained") or metrics.get(ROUND_KEY),
            "fit_seconds": metrics.get("fit_seconds"), "seconds": metrics.get("time_total_s"),
            "history": history, "error": error_text(result.error) if result.error else None,
        })
    return sorted(rows, key=lambda r: (r["trial"] is None, r["trial"] or 0))


def error_text(error) -> str:
    """The exception line of a trial's error (its first lines name the Ray actor)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def finite(value) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def best_trials(trials: list[dict], plan: SearchPlan) -> dict[str, dict]:
    """Per family, the best objective among finished trials (among any trial with a value when
    none finished, e.g. a time budget that cut every trial short)."""
    best = {}
    for family in plan.families:
        scored = [t for t in trials if t["family"] == family and t[plan.key] is not None]
        pool = [t for t in scored if t["status"] == "done"] or scored
        if pool:
            pick = (max if plan.mode == "max" else min)(pool, key=lambda t: t[plan.key])
            best[family] = {"trial": pick["trial"], "params": pick["params"], "value": pick[plan.key]}
    return best


class _Progress(Callback):
    """One line per finished trial. The console lives in a class attribute, not in the pickled
    experiment state, so a restored experiment prints too."""

    sink = None

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trial, "done" if trial.last_result.get("final") else "stopped")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "error")

    def _line(self, trial, status: str) -> None:
        if self.sink is None:
            return
        stages, total, plan = self.sink
        config, value = trial.config or {}, finite((trial.last_result or {}).get(plan.key))
        stages.info(f"trial {config.get('index', '?')}/{total} {config.get('family', '?')} {status}"
                    + (f": {plan.metric} {value:.4f}" if value is not None else "")
                    + f"  {params_text(config.get('params', {}))}")


def params_text(params: dict) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in params.items())


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
