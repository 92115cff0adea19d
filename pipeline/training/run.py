"""`run_pipeline`: the training workload that `rayline run` and `python -m jobs.train` call.

spec -> Ray and the execution plan -> MLflow run -> data (ingest, validate, version) -> split ->
features (+ feature_store) -> tuning -> train -> evaluate -> register, each stage from
pipeline.training.stages with the sections it needs; this module composes them and writes what
each returns to the run. The run's outcome (RunOutcome) is returned and saved as outcome.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from pipeline.progress import Stages
from pipeline.spec import Spec, SpecError
from pipeline.training import stages as st
from pipeline.training.outcomes import (
    OUTCOME_ARTIFACT, EvaluationOutcome, FeatureSet, RegisteredVersion, RunOutcome, SplitData,
)
from pipeline.training.stages import RunRefused


def run_pipeline(spec: Spec, stages: Stages | None = None, verbose: bool = False,
                 data_version: Optional[int] = None) -> RunOutcome:
    """The whole line. `data_version` re-runs from raw_data at that Delta version instead of
    reading the sources. Raises RunRefused (exit code 3) when nothing was registered."""
    import mlflow

    from pipeline import registry
    from pipeline.data import prepare

    stages = stages or Stages()
    plan = ray_stage(spec, stages, verbose)
    refuse_unavailable_families(spec)

    experiment_id = registry.configure_for(spec)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.name}-run") as run:
        run_id = run.info.run_id
        registry.log_spec(spec)
        mlflow.set_tag("rayline.training_plan", f"{plan.num_workers}x{plan.cpus_per_worker:g} CPU: {plan.reason}")
        prepared = prepare(spec, stages, run_id=run_id, data_version=data_version)
        split = split_stage(spec, prepared.frame, stages)
        features = features_stage(spec, split, stages, run_id)
        versions = {**prepared.table_versions, **features_versions(spec, split, features, run_id, stages)}
        data = st.train_data(features, spec.problem_type, spec.seed, plan, f"{spec.name}-{run_id[:8]}")
        model_params, tuning = dict(spec.model_params), None
        if spec.tuning:  # the search's best params override model_params for the families it tuned
            from pipeline.tuning import tune_families

            tuned, tuning = tune_families(spec, data, stages, run_id)
            model_params.update(tuned)
        with stages.stage(f"Train {', '.join(spec.model_families)}") as note:
            models, timings = st.train(spec.model_families, data, model_params)
            note(", ".join(f"{f} {timings.get(f, 0):.1f} s" for f in models))
        meta = {"name": spec.name, "problem_type": spec.problem_type, "target": spec.target,
                "classes": features.classes, "id_column": spec.id_column, "run_id": run_id,
                "data_versions": versions}
        evaluated = evaluate_stage(spec, models, timings, features, split, meta, stages)
        registered = register_stage(spec, evaluated, features, split, meta, stages)
        outcome = RunOutcome(
            spec_name=spec.name, run_id=run_id, experiment_id=experiment_id,
            training_plan=f"{plan.num_workers} x {plan.cpus_per_worker:g} CPU: {plan.reason}",
            data_versions=versions, validation=prepared.summary, split=split.sizes,
            features=features.describe(), tuning=tuning, leaderboard=evaluated.leaderboard,
            champion=evaluated.champion.family, val_metrics=evaluated.champion.val,
            test_metrics=evaluated.champion.test, latency=evaluated.champion.latency,
            thresholds=dict(spec.evaluation.thresholds),
            threshold_failures=evaluated.threshold_failures, model_name=spec.name,
            model_version=registered.version, previous_version=registered.previous)
        registry.log_dict(outcome.to_dict(), OUTCOME_ARTIFACT)
    if registered.refused:
        raise RunRefused(registered.refused)
    return outcome


def ray_stage(spec: Spec, stages: Stages, verbose: bool):
    """Ray (RAY_ADDRESS, the job's cluster, or a fresh local one) and the training plan sized on
    what it reports now."""
    from pipeline import execution

    with stages.stage("Ray") as note:
        started = execution.ensure_ray(verbose=verbose)
        cpus, nodes, gpus = execution.cluster_shape()
        plan = execution.plan_training(spec.scaling, cpus, nodes, gpus)
        note(execution.describe_cluster(started, cpus, nodes))
    stages.info(f"training plan: {plan.num_workers} worker(s) x {plan.cpus_per_worker:g} CPU — {plan.reason}")
    return plan


def refuse_unavailable_families(spec: Spec) -> None:
    from pipeline.models import AVAILABLE, unavailable

    missing = unavailable(spec.model_families)
    if missing:
        raise SpecError([f"{spec.where('advanced_models')}: model family {m} is not available in "
                         f"this version of rayline (available: {', '.join(AVAILABLE)})" for m in missing])


# --------------------------------------------------------------------------- stages, recorded

def split_stage(spec: Spec, frame: pd.DataFrame, stages: Stages, log: bool = True) -> SplitData:
    with stages.stage("Split") as note:
        split = st.split_frame(frame, spec.split, spec.target, spec.problem_type, spec.seed,
                               note=stages.info)
        sizes = split.sizes
        note(f"train {sizes['train']:,} / validation {sizes['validation']:,} / test {sizes['test']:,}"
             f" (seed {spec.seed}{', stratified' if split.stratified else ''})")
    if log:
        import mlflow

        mlflow.log_metrics({f"rows_{k}": v for k, v in sizes.items()})
    return split


def features_stage(spec: Spec, split: SplitData, stages: Stages, run_id: str) -> FeatureSet:
    from pipeline import registry

    with stages.stage("Features") as note:
        features = st.build_features(split, spec.transformations, spec.features, spec.expectations,
                                     spec.target, spec.id_column, spec.problem_type, spec.origin)
        note(f"{len(features.pipeline.required_columns)} input columns -> "
             f"{len(features.pipeline.output_columns)} features, fitted on the training split")
    registry.log_dict(features.pipeline.describe(), "features/pipeline.json")
    return features


def features_versions(spec: Spec, split: SplitData, features: FeatureSet, run_id: str,
                      stages: Stages) -> dict[str, int]:
    """The feature_store table: every row's features with its id, target and split."""
    from pipeline.versioning import TableStore, log_versions

    store = TableStore.of(spec.data_versioning, spec.name)
    if not store.tracked("feature_store"):
        return {}
    with stages.stage("Version feature_store") as note:
        parts = []
        columns = features.pipeline.output_columns
        for name, key in (("train", "train"), ("validation", "val"), ("test", "test")):
            frame = getattr(split, key)
            part = pd.DataFrame(features.X[key], columns=columns)
            part.insert(0, "_split", name)
            for offset, column in enumerate(c for c in (spec.id_column, spec.target) if c):
                part.insert(offset, column, frame[column].to_numpy())
            parts.append(part)
        table = store.write_frame("feature_store", pd.concat(parts, ignore_index=True), run_id)
        log_versions([table])
        note(f"version {table.version}, {table.rows:,} rows, hash {table.content_hash[:12]}")
    return {"feature_store": table.version}


def evaluate_stage(spec: Spec, models: dict, timings: dict, features: FeatureSet, split: SplitData,
                   meta: dict[str, Any], stages: Stages) -> EvaluationOutcome:
    import mlflow

    from pipeline import evaluation, registry

    plan = spec.evaluation_plan
    with stages.stage("Evaluate") as note:
        try:
            outcome = st.evaluate(plan, models, timings, features, split, meta)
        except RunRefused as exc:
            registry.log_dict(getattr(exc, "leaderboard", []), "leaderboard.json")
            raise
        metric, _ = plan.primary
        note(f"champion {outcome.champion.family}: validation {metric} "
             f"{outcome.champion.val.get(metric, float('nan')):.4f}")
    stages.console.print(evaluation.leaderboard_table(plan, outcome.leaderboard))
    with tempfile.TemporaryDirectory() as tmp:
        st.diagnostics(plan, outcome, features, split, Path(tmp))
        mlflow.log_artifacts(tmp, "evaluation")
    for c in outcome.candidates:
        with mlflow.start_run(run_name=c.family, nested=True):
            mlflow.log_params({f"{c.family}.{k}": v for k, v in c.model.params.items()})
            mlflow.log_metrics({**_prefixed(c), "train_seconds": c.train_seconds})
    mlflow.log_metrics(_prefixed(outcome.champion))
    mlflow.set_tag("rayline.champion_family", outcome.champion.family)
    registry.log_dict(outcome.leaderboard, "leaderboard.json")
    return outcome


def _prefixed(c) -> dict[str, float]:
    return {**{f"val_{k}": v for k, v in c.val.items()}, **{f"test_{k}": v for k, v in c.test.items()},
            **{f"latency_{k}": v for k, v in c.latency.items()}}


def register_stage(spec: Spec, outcome: EvaluationOutcome, features: FeatureSet, split: SplitData,
                   meta: dict[str, Any], stages: Stages) -> RegisteredVersion:
    """Thresholds met: a new registered version, now @champion (through the lifecycle, which
    records the change). Not met: the model stays in the run, outside the registry."""
    import mlflow

    from pipeline import registry
    from pipeline.lifecycle import Lifecycle

    predictor = st.predictor_for(outcome, features, meta)
    with stages.stage("Register") as note, tempfile.TemporaryDirectory() as tmp:
        predictor_dir = predictor.save(Path(tmp) / "rayline_model")
        # The signature keeps the training dtypes: MLflow refuses int64 input for a double column.
        example = split.train[features.pipeline.required_columns].head(3)
        if not outcome.registrable:
            mlflow.set_tag("rayline.registered", "false: " + "; ".join(outcome.threshold_failures))
            note("not registered: a threshold was not met")
            registry.log_predictor(predictor_dir, example, None)
            return RegisteredVersion(spec.name, None, refused=list(outcome.threshold_failures))
        info = registry.log_predictor(predictor_dir, example, spec.name)
        version = str(info.registered_model_version)
        change = Lifecycle(spec.name, spec.experiment_name).promote(
            version, reason=f"rayline run {meta['run_id']}: thresholds met")
        previous = change.before.get(registry.CHAMPION)
        previous = previous if previous != version else None
        mlflow.set_tag("rayline.registered", f"{spec.name} v{version}")
        note(f"{spec.name} version {version} is now @{registry.CHAMPION}"
             + (f" (v{previous} kept as @{registry.PREVIOUS})" if previous else ""))
    return RegisteredVersion(spec.name, version, previous)

