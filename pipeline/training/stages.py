"""The stages of the training workload, each taking the spec sections it works on and returning a
typed outcome (pipeline.training.outcomes). No MLflow here: `run.py` records what the stages
return. `rayline run`, `rayline tune` and the jobs compose these same functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from pipeline.errors import RaylineError
from pipeline.spec import EvaluationPlan, Expectations, FeatureSelection, Origin, Split, SpecError
from pipeline.training.outcomes import EvaluationOutcome, FeatureSet, SplitData


class RunRefused(RaylineError, RuntimeError):
    """The run finished but registered nothing (a threshold was not met, or no model was
    eligible)."""

    exit_code = 3
    title = "the champion did not meet evaluation.thresholds"
    outcome = "nothing was registered"


# --------------------------------------------------------------------------- split

def split_frame(df: pd.DataFrame, split: Split, target: str, problem_type: str, seed: int,
                note: Optional[Callable[[str], None]] = None) -> SplitData:
    """Seeded train/validation/test split, stratified on the target for classification."""
    from sklearn.model_selection import train_test_split

    train_r, val_r, test_r = split.ratios
    stratify = split.stratify and problem_type == "classification"
    labels = df[target] if stratify else None
    if stratify and labels.value_counts().min() < 3:
        stratify, labels = False, None
        note and note("a class has fewer than 3 rows: split without stratification")
    rest_r = val_r + test_r
    train, rest = train_test_split(df, test_size=rest_r, random_state=seed, stratify=labels)
    if test_r == 0:
        return SplitData(train, rest, rest.iloc[0:0], seed, stratify)
    val, test = train_test_split(rest, test_size=test_r / rest_r, random_state=seed,
                                 stratify=rest[target] if stratify else None)
    return SplitData(train, val, test, seed, stratify)


# --------------------------------------------------------------------------- features

def build_features(split: SplitData, transformations: list, selection: FeatureSelection,
                   expectations: Expectations, target: str, id_column: Optional[str],
                   problem_type: str, origin: Origin) -> FeatureSet:
    """Fit the spec's transformations on the training part and transform every part. A step
    that does not fit a column is a spec error naming the transformation's line."""
    from pipeline.features import FeatureError, FeaturePipeline
    from pipeline.predictor import column_kind, infer_schema

    frame = split.train
    inputs = selection.columns(list(frame.columns), target, id_column)
    kinds = {c: column_kind(frame[c]) for c in frame.columns}
    try:
        pipeline = FeaturePipeline.from_spec(transformations, inputs, kinds).fit(split.train)
    except FeatureError as exc:
        raise SpecError([f"{_feature_location(exc, transformations, origin)}: {exc}"]) from None
    X = {name: pipeline.transform(part).to_numpy(dtype=np.float64) for name, part in split.parts()}
    classes, y = encode_labels(split, target, problem_type)
    schema = infer_schema(split.train, pipeline.required_columns, expectations)
    return FeatureSet(pipeline, X, y, classes, schema, inputs)


def _feature_location(exc, transformations: list, origin: Origin) -> str:
    names = [t.name for t in transformations]
    name, column = getattr(exc, "transformation", None), getattr(exc, "column", None)
    if name not in names:
        return origin.where("transformations")
    i = names.index(name)
    columns = list(transformations[i].columns or [])
    if column in columns:
        return origin.where("transformations", i, "columns", columns.index(column))
    return origin.where("transformations", i)


def encode_labels(split: SplitData, target: str, problem_type: str):
    """(class labels or None, {part: y}): regression targets as float64; class labels sorted
    (by type, then value) and encoded as their index."""
    parts = split.parts()
    if problem_type == "regression":
        return None, {k: part[target].to_numpy(dtype=np.float64) for k, part in parts}
    every = pd.concat([part[target] for _, part in parts])
    classes = sorted(pd.unique(every.dropna()).tolist(), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    encoded = {k: part[target].map(index).to_numpy(dtype=np.int64) for k, part in parts}
    return [_plain(c) for c in classes], encoded


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def train_data(features: FeatureSet, problem_type: str, seed: int, plan, run_tag: str):
    """What every model family trains from (pipeline.models.TrainData)."""
    from pipeline.models import TrainData

    return TrainData(X_train=features.X["train"], y_train=features.y["train"],
                     X_val=features.X["val"], y_val=features.y["val"],
                     feature_names=features.pipeline.output_columns, problem_type=problem_type,
                     n_classes=features.n_classes, seed=seed, plan=plan,
                     storage_path=str(Path(".rayline/ray_results").resolve()), run_tag=run_tag)


# --------------------------------------------------------------------------- train

def train(families: list[str], data, model_params: dict[str, dict]) -> tuple[dict, dict[str, float]]:
    """(family -> trained model, family -> seconds)."""
    from pipeline.models import train_families

    timings: dict[str, float] = {}
    models = train_families(families, data, model_params,
                            on_done=lambda f, s: timings.__setitem__(f, s))
    return models, timings


# --------------------------------------------------------------------------- evaluate

def evaluate(plan: EvaluationPlan, models: dict[str, Any], timings: dict[str, float],
             features: FeatureSet, split: SplitData, meta: dict[str, Any]) -> EvaluationOutcome:
    """Every model on validation and test, with its latency (features included); the champion
    by the plan's criteria; the thresholds it must meet to be registered. Raises RunRefused
    when no model is eligible (e.g. none within the latency budget)."""
    from pipeline import evaluation
    from pipeline.metrics import threshold_failures

    candidates = [candidate(plan, family, model, features, split, meta, timings.get(family, 0.0))
                  for family, model in models.items()]
    try:
        champion = evaluation.select(plan, candidates)
    except evaluation.NoEligibleModel as exc:
        refused = RunRefused([str(exc)])
        refused.leaderboard = evaluation.leaderboard(candidates, None)
        raise refused from None
    return EvaluationOutcome(candidates, champion, evaluation.leaderboard(candidates, champion),
                             threshold_failures(champion.test, plan.thresholds))


def candidate(plan: EvaluationPlan, family: str, model, features: FeatureSet, split: SplitData,
              meta: dict[str, Any], seconds: float):
    from pipeline import evaluation
    from pipeline.predictor import Predictor

    predictor = Predictor(features.pipeline, model, features.schema, {**meta, "family": family})
    _, held_out = split.held_out
    truth = {k: part[plan.target].to_numpy() for k, part in split.parts()}
    return evaluation.Candidate(
        family, model,
        val=evaluation.split_metrics(plan, model, features.X["val"], truth["val"], features.classes),
        test=evaluation.split_metrics(plan, model, features.X["test"], truth["test"], features.classes),
        latency=evaluation.measure_latency(predictor, held_out), train_seconds=seconds)


def diagnostics(plan: EvaluationPlan, outcome: EvaluationOutcome, features: FeatureSet,
                split: SplitData, directory: Path) -> list[Path]:
    """The champion's plots, curves and per-slice metrics on the held-out part, into directory."""
    from pipeline import evaluation

    part, frame = split.held_out
    pred, proba = evaluation.predictions(plan, outcome.champion.model, features.X[part], features.classes)
    return evaluation.diagnostics(plan, frame, frame[plan.target].to_numpy(), pred, proba,
                                  features.classes, directory)


# --------------------------------------------------------------------------- register

def predictor_for(outcome: EvaluationOutcome, features: FeatureSet, meta: dict[str, Any]):
    """The champion as the one artifact a prediction needs."""
    from pipeline.predictor import Predictor

    champion = outcome.champion
    return Predictor(features.pipeline, champion.model, features.schema,
                     {**meta, "family": champion.family, "test_metrics": champion.test})

