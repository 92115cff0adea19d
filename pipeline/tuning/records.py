"""What a search leaves behind (MLflow child runs, tuning/*.json, rich tables) and
`tune_families`, the tuning step of `rayline run` (`rayline tune` is pipeline.training.tune)."""

from __future__ import annotations

import time
from typing import Optional

from pipeline.spec import Spec
from pipeline.tuning.driver import TuningResult, finite, params_text, run_tuning


def log_tuning(result: TuningResult, parent_run_id: str) -> None:
    """From the driver, into the active run: a child run per trial (params, validation metrics,
    the objective's curve for xgboost), tuning/trials.json, tuning/best.json, best params."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    from pipeline import registry

    client = mlflow.MlflowClient()
    experiment_id = mlflow.get_run(parent_run_id).info.experiment_id
    plan = result.plan
    now = int(time.time() * 1000)
    for t in result.trials:
        name = f"trial-{t['trial']:03d}-{t['family']}" if t["trial"] is not None else t["trial_id"]
        run = client.create_run(experiment_id, run_name=name, tags={
            "mlflow.parentRunId": parent_run_id, "rayline.kind": "tuning_trial",
            "rayline.trial_id": str(t["trial_id"]), "rayline.trial_status": t["status"],
            "rayline.family": t["family"]})
        params = [Param("family", t["family"])] + [
            Param(f"{t['family']}.{k}", str(v)[:6000]) for k, v in t["params"].items()]
        metrics = [Metric(k, float(v), now, 0) for k, v in t["metrics"].items() if finite(v) is not None]
        # The curve has its own key: MLflow shows a metric's highest step as its value.
        metrics += [Metric(f"{plan.key}_by_round", float(v), now, r) for r, v in t["history"]
                    if finite(v) is not None]
        for name_, value in (("fit_seconds", t["fit_seconds"]), ("trial_seconds", t["seconds"]),
                             ("rounds", t["rounds"])):
            if finite(value) is not None:
                metrics.append(Metric(name_, float(value), now, 0))
        tags = [RunTag("rayline.trial_error", t["error"])] if t["error"] else []
        client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
        client.set_terminated(run.info.run_id, "FAILED" if t["status"] == "error" else "FINISHED")
    registry.log_dict(result.trials, "tuning/trials.json")
    registry.log_dict({"objective": {"metric": plan.metric, "mode": plan.mode},
                       "families": plan.families, "best": result.best}, "tuning/best.json")
    mlflow.log_params({f"tuning.best.{f}.{k}": str(v)[:6000]
                       for f, b in result.best.items() for k, v in b["params"].items()})
    overhead = result.overhead_per_trial
    mlflow.log_metrics({"tuning_trials": len(result.trials), "tuning_seconds": result.seconds,
                        **({"tuning_overhead_per_trial_s": overhead} if overhead is not None else {}),
                        **{f"tuning_best_{f}_{plan.key}": b["value"] for f, b in result.best.items()}})
    mlflow.set_tags({"rayline.tuning": f"{len(result.trials)} trials, {result.concurrent} at a "
                                       f"time x {result.cpus_per_trial} CPU",
                     "rayline.tuning_experiment": result.experiment_path})


def trials_table(result: TuningResult, limit: Optional[int] = None):
    """A rich table of the trials; ★ marks each family's best."""
    from rich.table import Table

    plan = result.plan
    best = {(f, b["trial"]) for f, b in result.best.items()}
    table = Table(title=f"Tuning trials (validation {plan.metric}, "
                        f"{'higher' if plan.mode == 'max' else 'lower'} is better)", title_justify="left")
    for name, justify in (("trial", "right"), ("model", "left"), ("status", "left"),
                          (plan.metric, "right"), ("rounds", "right"), ("s", "right"), ("params", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    rows = result.trials if limit is None else result.trials[:limit]
    for t in rows:
        star = "★ " if (t["family"], t["trial"]) in best else ""
        value = t[plan.key]
        table.add_row(str(t["trial"]), f"{star}{t['family']}", t["status"],
                      "-" if value is None else f"{value:.4f}", str(t["rounds"] or "-"),
                      "-" if t["seconds"] is None else f"{t['seconds']:.1f}", params_text(t["params"]))
    if limit is not None and len(result.trials) > limit:
        table.caption = f"… {len(result.trials) - limit} more in tuning/trials.json"
    return table


def best_table(result: TuningResult, model_params: dict[str, dict]):
    from rich.table import Table

    table = Table(title="Best configuration per model", title_justify="left")
    for name in ("model", "trial", f"validation {result.plan.metric}", "params (model_params + tuned)"):
        table.add_column(name, overflow="fold")
    tuned = result.tuned_params(model_params)
    for family, b in result.best.items():
        table.add_row(family, str(b["trial"]), f"{b['value']:.4f}", params_text(tuned[family]))
    return table


def tune_families(spec: Spec, data, stages, run_id: str) -> tuple[dict[str, dict], dict]:
    """`rayline run`'s tuning step: search, log the trials under run `run_id`. Returns the
    params (model_params with the best values over them) of every family that was tuned, and a
    summary of the search for the run's outcome."""
    result = run_tuning(spec, data, stages)
    log_tuning(result, run_id)
    stages.console.print(trials_table(result, limit=20))
    tuned = result.tuned_params(spec.model_params)
    for family, params in tuned.items():
        stages.info(f"{family}: retraining with the best trial's params: {params_text(params)}")
    return tuned, summary(result)


def summary(result: TuningResult) -> dict:
    plan = result.plan
    return {"trials": len(result.trials), "metric": plan.metric, "mode": plan.mode,
            "families": list(plan.families), "best": result.best, "seconds": result.seconds,
            "experiment_path": result.experiment_path}
