"""What each stage of the training workload hands to the next, and the run's final outcome.

prepared data (pipeline.data.PreparedData) -> SplitData -> FeatureSet -> trained models ->
EvaluationOutcome -> RegisteredVersion, all gathered in one RunOutcome: a plain value saved
with the run (`outcome.json`) that the model card and the checklist read instead of digging
through a function's locals or the MLflow run's scattered records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

OUTCOME_ARTIFACT = "outcome.json"
OUTCOME_FORMAT = "rayline.run_outcome"


@dataclass
class SplitData:
    """The passed rows, split: seeded, stratified on the target for classification."""
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    seed: int
    stratified: bool

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.val), "test": len(self.test)}

    def parts(self) -> tuple[tuple[str, pd.DataFrame], ...]:
        return (("train", self.train), ("val", self.val), ("test", self.test))

    @property
    def held_out(self) -> tuple[str, pd.DataFrame]:
        """The split diagnostics and latency use: test, or validation when there is no test."""
        return ("test", self.test) if len(self.test) else ("val", self.val)


@dataclass
class FeatureSet:
    """The fitted feature pipeline and what it made of the split: float64 matrices and encoded
    labels per part (train / val / test), the class labels, and the input schema a served
    request is checked against."""
    pipeline: Any                              # pipeline.features.FeaturePipeline, fitted
    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    classes: Optional[list[Any]]               # None for regression
    schema: Any                                # pipeline.predictor.InputSchema
    inputs: list[str]                          # the raw input columns, in order

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes else 0

    def describe(self) -> dict[str, Any]:
        return {"inputs": list(self.pipeline.required_columns),
                "outputs": list(self.pipeline.output_columns), "steps": self.pipeline.describe()}


@dataclass
class EvaluationOutcome:
    """Every candidate measured, the champion chosen, and whether it meets the thresholds."""
    candidates: list[Any]                      # pipeline.evaluation.Candidate
    champion: Any
    leaderboard: list[dict[str, Any]]
    threshold_failures: list[str]

    @property
    def registrable(self) -> bool:
        return not self.threshold_failures


@dataclass
class RegisteredVersion:
    model_name: str
    version: Optional[str]                     # None: logged with the run, not registered
    previous: Optional[str] = None             # the champion it replaced (now @previous)
    refused: list[str] = field(default_factory=list)


@dataclass
class RunOutcome:
    """The whole run as one value. `to_dict` is what `outcome.json` holds."""
    spec_name: str
    run_id: str
    experiment_id: str
    training_plan: str
    data_versions: dict[str, Any]
    validation: dict[str, Any]                 # rows, passed, quarantined, rules
    split: dict[str, int]
    features: dict[str, Any]
    tuning: Optional[dict[str, Any]]
    leaderboard: list[dict[str, Any]]
    champion: str
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    latency: dict[str, float]
    thresholds: dict[str, float]
    threshold_failures: list[str]
    model_name: str
    model_version: Optional[str]
    previous_version: Optional[str] = None

    @property
    def registered(self) -> bool:
        return self.model_version is not None

    @property
    def refused(self) -> list[str]:
        return self.threshold_failures

    def to_dict(self) -> dict[str, Any]:
        return {"format": OUTCOME_FORMAT, "version": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunOutcome":
        if data.get("format") != OUTCOME_FORMAT:
            raise ValueError(f"not a run outcome (format is not {OUTCOME_FORMAT!r})")
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        return cls(**fields)
