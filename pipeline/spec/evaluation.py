"""The evaluation sections: which metrics are measured (`evaluation`, with custom metrics, slices and
thresholds), how the champion is chosen (`selection_criteria`) and where runs are tracked
(`tracking`). The metric names and directions are the metrics room's (pipeline.metrics.names).

`EvaluationPlan` is what the evaluate stage works from: this section resolved for the spec's
problem type, so the stage takes it instead of the whole spec."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, field_validator, model_validator

from pipeline import units
from pipeline.formula import Formula, FormulaError
from pipeline.metrics.names import (
    CLASSIFICATION_METRICS, CONFUSION_NAMES, DEFAULT_OBJECTIVE, REGRESSION_FORMULA_NAMES,
    REGRESSION_METRICS, mode,
)
from pipeline.spec.base import MetricName, Model, metric_name

# A latency budget among selection_criteria: `inference_latency < 20ms` (p99 per record),
# `latency_p50 <= 5ms`, `latency_p99 < 20ms`.
LATENCY_BUDGET_RE = re.compile(r"^\s*(inference_latency|latency_p50|latency_p99)\s*(<=|<)\s*(\S+)\s*$")
SELECTION_WORDS = ("auto", "inference_latency", "interpretability")



class CustomMetric(Model):
    name: str
    cost_matrix: Optional[list[list[float]]] = None
    formula: Optional[str] = None
    direction: Literal["maximize", "minimize", "auto"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(f"custom metric {value!r} needs a definition: "
                             f"{{name: {value}, cost_matrix: [[...]]}} or {{name: {value}, formula: ...}}")
        return value

    @model_validator(mode="after")
    def _one_definition(self) -> "CustomMetric":
        if (self.cost_matrix is None) == (self.formula is None):
            raise ValueError("give exactly one of cost_matrix or formula")
        if self.cost_matrix is not None:
            n = len(self.cost_matrix)
            if n < 2 or any(len(row) != n for row in self.cost_matrix):
                raise ValueError("cost_matrix must be square (rows: actual, columns: predicted)")
        if self.formula is not None:
            try:
                Formula.parse(self.formula, allowed_names=CONFUSION_NAMES + REGRESSION_FORMULA_NAMES)
            except FormulaError as exc:
                raise ValueError(str(exc)) from None
        return self



class Evaluation(Model):
    classification: list[MetricName] = ["accuracy", "precision", "recall", "f1_score", "auc_roc",
                                        "confusion_matrix"]
    regression: list[MetricName] = ["mse", "rmse", "mae", "r2_score"]
    custom: list[CustomMetric] = []
    slices: list[str] = []
    thresholds: dict[Annotated[str, BeforeValidator(metric_name)], float] = {}

    @field_validator("classification")
    @classmethod
    def _known_classification(cls, value: list[str]) -> list[str]:
        return _known(value, CLASSIFICATION_METRICS)

    @field_validator("regression")
    @classmethod
    def _known_regression(cls, value: list[str]) -> list[str]:
        return _known(value, REGRESSION_METRICS)


def _known(value: list[str], allowed: tuple[str, ...]) -> list[str]:
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
    return value


class Tracking(Model):
    uri: str = "sqlite:///.rayline/mlflow.db"
    experiment: Optional[str] = None
    artifact_location: Optional[str] = None



@dataclass(frozen=True)
class EvaluationPlan:
    """The evaluation section resolved for one problem type: what the evaluate stage measures,
    how it ranks, what a registered model must meet."""
    problem_type: str
    target: str
    metrics: tuple[str, ...]                  # built-in metric names, in the spec's order
    custom: tuple[CustomMetric, ...]
    slices: tuple[str, ...]
    thresholds: dict[str, float]
    primary: tuple[str, str]                  # (metric, "max" | "min"): ranks the candidates
    latency_budget: Optional[tuple[str, float]]   # ("p50_ms" | "p99_ms", milliseconds)

    @property
    def known_metrics(self) -> set[str]:
        return set(self.metrics) | {c.name for c in self.custom}


def metric_names(evaluation: Evaluation, problem_type: str) -> list[str]:
    return list(evaluation.classification if problem_type == "classification" else evaluation.regression)


def primary_metric(selection_criteria: list[str], problem_type: str,
                   custom: tuple = ()) -> tuple[str, str]:
    """(metric, 'max'|'min') that ranks models: the first metric in selection_criteria."""
    for criterion in selection_criteria:
        name = metric_name(criterion)
        if name in SELECTION_WORDS or LATENCY_BUDGET_RE.match(criterion):
            continue
        return name, mode(name, custom)
    return DEFAULT_OBJECTIVE[problem_type]


def latency_budget(selection_criteria: list[str]) -> Optional[tuple[str, float]]:
    """('p50_ms' | 'p99_ms', milliseconds) from a criterion like `inference_latency < 20ms`."""
    for criterion in selection_criteria:
        match = LATENCY_BUDGET_RE.match(criterion)
        if match:
            key = "p50_ms" if match.group(1) == "latency_p50" else "p99_ms"
            return key, units.parse_duration(match.group(3)) * 1000
    return None


def plan(spec) -> EvaluationPlan:
    ev = spec.evaluation
    return EvaluationPlan(
        problem_type=spec.problem_type, target=spec.target,
        metrics=tuple(metric_names(ev, spec.problem_type)), custom=tuple(ev.custom),
        slices=tuple(ev.slices), thresholds=dict(ev.thresholds),
        primary=primary_metric(spec.selection_criteria, spec.problem_type, tuple(ev.custom)),
        latency_budget=latency_budget(spec.selection_criteria))


def known_metrics(spec) -> set[str]:
    return set(metric_names(spec.evaluation, spec.problem_type)) | {c.name for c in spec.evaluation.custom}


def check(spec) -> list[tuple[tuple, str]]:
    """Thresholds and selection criteria name metrics the spec measures; custom formulas read
    names of the problem type."""
    problems: list[tuple[tuple, str]] = []
    known = known_metrics(spec)
    for metric in spec.evaluation.thresholds:
        if metric not in known:
            problems.append((("evaluation", "thresholds", metric),
                             f"{metric} is not a metric of this {spec.problem_type} spec "
                             f"(known: {', '.join(sorted(known))})"))
    for i, criterion in enumerate(spec.selection_criteria):
        budget = LATENCY_BUDGET_RE.match(criterion)
        if budget:
            try:
                units.parse_duration(budget.group(3))
            except ValueError as exc:
                problems.append((("selection_criteria", i), str(exc)))
        elif metric_name(criterion) not in known | set(SELECTION_WORDS):
            problems.append((("selection_criteria", i), f"unknown criterion {criterion!r}; use a metric "
                             "of the spec, inference_latency (optionally with a budget: "
                             "`inference_latency < 20ms`) or interpretability"))
    formula_names = CONFUSION_NAMES if spec.problem_type == "classification" else REGRESSION_FORMULA_NAMES
    for i, metric in enumerate(spec.evaluation.custom):
        if metric.formula is not None:
            try:
                Formula.parse(metric.formula, allowed_names=formula_names)
            except FormulaError as exc:
                problems.append((("evaluation", "custom", i, "formula"), f"{metric.name}: {exc}"))
        if metric.cost_matrix is not None and spec.problem_type == "regression":
            problems.append((("evaluation", "custom", i, "cost_matrix"),
                             f"{metric.name}: a cost_matrix needs a classification spec"))
    return problems
