"""The training workload as stages with typed outcomes: `stages` (split, features, train,
evaluate, register: each takes the spec sections it works on), `outcomes` (what each stage
returns, and the run's RunOutcome), `run` (`run_pipeline`, which composes them and records
each in the MLflow run)."""

from pipeline.training.outcomes import (
    EvaluationOutcome, FeatureSet, RegisteredVersion, RunOutcome, SplitData,
)
from pipeline.training.run import run_pipeline
from pipeline.training.stages import RunRefused

__all__ = ["EvaluationOutcome", "FeatureSet", "RegisteredVersion", "RunOutcome", "RunRefused",
           "SplitData", "run_pipeline"]
