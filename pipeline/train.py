"""The training workload: spec -> data -> validation -> split -> features -> models -> evaluation
-> MLflow run -> registered champion. `run_pipeline` is what `rayline run` and `jobs.train` call."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from pipeline._internal.progress import Stages
from pipeline.spec import Spec


class RunRefused(RuntimeError):
    """The run finished but registered nothing (a threshold was not met)."""


@dataclass
class Split:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


@dataclass
class RunResult:
    run_id: str
    experiment_id: str
    champion: str
    model_name: str
    model_version: Optional[str]
    leaderboard: list[dict[str, Any]]
    test_metrics: dict[str, float]
    refused: list[str] = field(default_factory=list)


def feature_columns(spec: Spec, columns: list[str]) -> list[str]:
    if spec.features.include:
        return list(spec.features.include)
    skip = {spec.target, spec.id_column, *spec.features.exclude}
    return [c for c in columns if c not in skip]


def split_frame(df: pd.DataFrame, spec: Spec, note=None) -> Split:
    """Seeded train/validation/test split, stratified on the target for classification."""
    from sklearn.model_selection import train_test_split

    train_r, val_r, test_r = spec.split.ratios
    stratify = spec.split.stratify and spec.problem_type == "classification"
    labels = df[spec.target] if stratify else None
    if stratify and labels.value_counts().min() < 3:
        stratify, labels = False, None
        note and note("a class has fewer than 3 rows: split without stratification")
    rest_r = val_r + test_r
    train, rest = train_test_split(df, test_size=rest_r, random_state=spec.seed, stratify=labels)
    if test_r == 0:
        return Split(train, rest, rest.iloc[0:0])
    val, test = train_test_split(rest, test_size=test_r / rest_r, random_state=spec.seed,
                                 stratify=rest[spec.target] if stratify else None)
    return Split(train, val, test)


def run_pipeline(spec: Spec, stages: Stages | None = None, verbose: bool = False,
                 data_version: Optional[int] = None) -> RunResult:
    """The whole line. `data_version` re-runs from raw_data at that Delta version instead of
    reading the sources."""
    import mlflow

    from pipeline import registry
    from pipeline import execution
    from pipeline.data import prepare

    stages = stages or Stages()
    with stages.stage("Ray") as note:
        started = execution.ensure_ray(verbose=verbose)
        cpus, nodes, gpus = execution.cluster_shape()
        plan = execution.plan_training(spec.scaling, cpus, nodes, gpus)
        note(execution.describe_cluster(started, cpus, nodes))
    stages.info(f"training plan: {plan.num_workers} worker(s) x {plan.cpus_per_worker:g} CPU — {plan.reason}")
    _refuse_unavailable_families(spec)

    experiment_id = registry.configure(spec)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.name}-run") as run:
        registry.log_spec(spec)
        mlflow.set_tag("rayline.training_plan", f"{plan.num_workers}x{plan.cpus_per_worker:g} CPU: {plan.reason}")
        prepared = prepare(spec, stages, run_id=run.info.run_id, data_version=data_version)
        versions = {name: v.version for name, v in prepared.versions.items() if name != "quarantine"}
        if prepared.raw_version is not None:
            versions["raw_data"] = prepared.raw_version
        result = _train_and_register(spec, prepared.frame, plan, stages, run.info.run_id, experiment_id,
                                     versions)
    return result


def _refuse_unavailable_families(spec: Spec) -> None:
    from pipeline.models import AVAILABLE, unavailable

    missing = unavailable(spec.model_families)
    if missing:
        from pipeline.spec import SpecError
        raise SpecError([f"{spec.where('advanced_models')}: model family {m} is not available in "
                         f"this version of rayline (available: {', '.join(AVAILABLE)})" for m in missing])


def _train_and_register(spec: Spec, df: pd.DataFrame, plan, stages: Stages, run_id: str,
                        experiment_id: str, data_versions: dict[str, int]) -> RunResult:
    import mlflow

    from pipeline import evaluation, registry
    from pipeline.features import FeaturePipeline
    from pipeline.metrics import threshold_failures
    from pipeline.models import TrainData, train_families
    from pipeline.predictor import Predictor, column_kind, infer_schema

    with stages.stage("Split") as note:
        split = split_frame(df, spec, note=stages.info)
        note(f"train {len(split.train):,} / validation {len(split.val):,} / test {len(split.test):,}"
             f" (seed {spec.seed}{', stratified' if spec.split.stratify and spec.problem_type == 'classification' else ''})")
    mlflow.log_metrics({"rows_train": len(split.train), "rows_validation": len(split.val),
                        "rows_test": len(split.test)})

    with stages.stage("Features") as note:
        inputs = feature_columns(spec, list(df.columns))
        kinds = {c: column_kind(df[c]) for c in df.columns}
        pipeline = FeaturePipeline.from_spec(spec.transformations, inputs, kinds).fit(split.train)
        X = {name: pipeline.transform(part).to_numpy(dtype=np.float64)
             for name, part in (("train", split.train), ("val", split.val), ("test", split.test))}
        note(f"{len(pipeline.required_columns)} input columns -> {len(pipeline.output_columns)} "
             "features, fitted on the training split")
    registry.log_dict(pipeline.describe(), "features/pipeline.json")
    features_version = _version_features(spec, split, X, pipeline.output_columns, run_id, stages)
    if features_version is not None:
        data_versions = {**data_versions, "feature_store": features_version.version}

    classes, y = _labels(spec, df, split)
    data = TrainData(X_train=X["train"], y_train=y["train"], X_val=X["val"], y_val=y["val"],
                     feature_names=pipeline.output_columns, problem_type=spec.problem_type,
                     n_classes=len(classes) if classes else 0, seed=spec.seed, plan=plan,
                     storage_path=str(Path(".rayline/ray_results").resolve()),
                     run_tag=f"{spec.name}-{run_id[:8]}")
    schema = infer_schema(split.train, pipeline.required_columns, spec.expectations)
    meta_base = {"name": spec.name, "problem_type": spec.problem_type, "target": spec.target,
                 "classes": classes, "id_column": spec.id_column, "run_id": run_id,
                 "data_versions": data_versions}

    model_params = dict(spec.model_params)
    if spec.tuning:  # the search's best params override model_params for the families it tuned
        from pipeline.tuning import tune_families
        model_params.update(tune_families(spec, data, stages, run_id))
    timings: dict[str, float] = {}
    with stages.stage(f"Train {', '.join(spec.model_families)}") as note:
        models = train_families(spec.model_families, data, model_params,
                                on_done=lambda f, s: timings.__setitem__(f, s))
        note(", ".join(f"{f} {timings.get(f, 0):.1f} s" for f in models))

    with stages.stage("Evaluate") as note:
        candidates = [_evaluate(spec, family, model, pipeline, schema, meta_base, split, X, classes,
                                timings.get(family, 0.0))
                      for family, model in models.items()]
        board = None
        try:
            champion = evaluation.select(spec, candidates)
        except evaluation.NoEligibleModel as exc:
            registry.log_dict(evaluation.leaderboard(spec, candidates, None), "leaderboard.json")
            raise RunRefused(f"nothing registered: {exc}") from None
        board = evaluation.leaderboard(spec, candidates, champion)
        metric, _ = spec.primary_metric
        note(f"champion {champion.family}: validation {metric} {champion.val.get(metric, float('nan')):.4f}")
    stages.console.print(evaluation.leaderboard_table(spec, board))
    _log_diagnostics(spec, champion, split, X, classes)
    for c in candidates:
        with mlflow.start_run(run_name=c.family, nested=True):
            mlflow.log_params({f"{c.family}.{k}": v for k, v in c.model.params.items()})
            mlflow.log_metrics({**{f"val_{k}": v for k, v in c.val.items()},
                                **{f"test_{k}": v for k, v in c.test.items()},
                                **{f"latency_{k}": v for k, v in c.latency.items()},
                                "train_seconds": c.train_seconds})
    mlflow.log_metrics({**{f"val_{k}": v for k, v in champion.val.items()},
                        **{f"test_{k}": v for k, v in champion.test.items()},
                        **{f"latency_{k}": v for k, v in champion.latency.items()}})
    mlflow.set_tag("rayline.champion_family", champion.family)
    registry.log_dict(board, "leaderboard.json")

    failures = threshold_failures(champion.test, spec.evaluation.thresholds)
    predictor = Predictor(pipeline, champion.model, schema, {**meta_base, "family": champion.family,
                                                              "test_metrics": champion.test})
    with stages.stage("Register") as note, tempfile.TemporaryDirectory() as tmp:
        predictor_dir = predictor.save(Path(tmp) / "rayline_model")
        # The signature keeps the training dtypes: MLflow refuses int64 input for a double column.
        example = split.train[pipeline.required_columns].head(3)
        version = None
        if failures:
            mlflow.set_tag("rayline.registered", "false: " + "; ".join(failures))
            note("not registered: a threshold was not met")
            # Keep the model in the run for analysis, but outside the registry.
            _log_unregistered(predictor_dir, example)
        else:
            info = registry.log_predictor(predictor_dir, example, spec.name)
            version = str(info.registered_model_version)
            previous = registry.promote(spec.name, version)
            mlflow.set_tag("rayline.registered", f"{spec.name} v{version}")
            note(f"{spec.name} version {version} is now @{registry.CHAMPION}"
                 + (f" (v{previous} kept as @{registry.PREVIOUS})" if previous else ""))
    result = RunResult(run_id=run_id, experiment_id=experiment_id, champion=champion.family,
                       model_name=spec.name, model_version=version, leaderboard=board,
                       test_metrics=champion.test, refused=failures)
    if failures:
        raise RunRefused("nothing registered: " + "; ".join(failures))
    return result


def _version_features(spec: Spec, split: Split, X: dict[str, np.ndarray], columns: list[str],
                      run_id: str, stages: Stages):
    """The feature_store table: every row's features with its id, target and split."""
    from pipeline import versioning

    if not versioning.tracked(spec, "feature_store"):
        return None
    with stages.stage("Version feature_store") as note:
        parts = []
        for name, frame in (("train", split.train), ("validation", split.val), ("test", split.test)):
            part = pd.DataFrame(X["val" if name == "validation" else name], columns=columns)
            keys = [c for c in (spec.id_column, spec.target) if c]
            part.insert(0, "_split", name)
            for offset, key in enumerate(keys):
                part.insert(offset, key, frame[key].to_numpy())
            parts.append(part)
        table = versioning.write_frame(spec, "feature_store", pd.concat(parts, ignore_index=True), run_id)
        versioning.log_versions([table])
        note(f"version {table.version}, {table.rows:,} rows, hash {table.content_hash[:12]}")
    return table


def _log_unregistered(predictor_dir: Path, example: pd.DataFrame) -> None:
    import mlflow

    from pipeline._internal import mlflow_model
    from pipeline.predictor import ARTIFACT_NAME

    mlflow.pyfunc.log_model(name="model", python_model=mlflow_model.__file__,
                            artifacts={ARTIFACT_NAME: str(predictor_dir)}, input_example=example)


def _labels(spec: Spec, df: pd.DataFrame, split: Split):
    if spec.problem_type == "regression":
        return None, {k: getattr(split, p)[spec.target].to_numpy(dtype=np.float64)
                      for k, p in (("train", "train"), ("val", "val"), ("test", "test"))}
    classes = sorted(pd.unique(df[spec.target].dropna()).tolist(), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    encoded = {k: getattr(split, p)[spec.target].map(index).to_numpy(dtype=np.int64)
               for k, p in (("train", "train"), ("val", "val"), ("test", "test"))}
    return [_plain(c) for c in classes], encoded


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _evaluate(spec, family, model, pipeline, schema, meta, split, X, classes, seconds):
    from pipeline import evaluation
    from pipeline.predictor import Predictor

    def truth(frame: pd.DataFrame) -> np.ndarray:
        return frame[spec.target].to_numpy()

    predictor = Predictor(pipeline, model, schema, {**meta, "family": family})
    latency = evaluation.measure_latency(predictor, split.test if len(split.test) else split.val)
    return evaluation.Candidate(
        family, model,
        val=evaluation.split_metrics(spec, model, X["val"], truth(split.val), classes),
        test=evaluation.split_metrics(spec, model, X["test"], truth(split.test), classes),
        latency=latency, train_seconds=seconds)


def _log_diagnostics(spec: Spec, champion, split: Split, X: dict[str, np.ndarray], classes) -> None:
    """The champion's plots, curves and per-slice metrics on the test split (validation when
    there is no test split), as MLflow artifacts under evaluation/."""
    import mlflow

    from pipeline import evaluation

    part, frame = ("test", split.test) if len(split.test) else ("val", split.val)
    pred, proba = evaluation.predictions(spec, champion.model, X[part], classes)
    with tempfile.TemporaryDirectory() as tmp:
        evaluation.diagnostics(spec, frame, frame[spec.target].to_numpy(), pred, proba, classes,
                               Path(tmp))
        mlflow.log_artifacts(tmp, "evaluation")
