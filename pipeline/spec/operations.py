"""The operations sections: `monitoring` (drift, live performance, infrastructure), `ab_testing`
(split or shadow, the success metrics and the test's length) and `rollback` (triggers, window,
procedure)."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from pipeline import units
from pipeline.spec.base import Duration, Fraction, Model, ShortForm, json_schema


class Alerts(ShortForm, Model):
    webhook: Optional[SecretStr] = None
    channel: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # The seed writes `alerts: slack`: a channel whose webhook is given later.
        return {"channel": value} if isinstance(value, str) else value


class DataDrift(Model):
    tool: Literal["evidently"] = "evidently"
    frequency: Duration = 3600.0
    threshold: float = Field(0.3, ge=0, le=1)
    alerts: Optional[Alerts] = None


class ModelPerformance(Model):
    metrics: list[str] = ["accuracy", "latency"]
    baseline: Literal["training_metrics"] = "training_metrics"
    threshold: Fraction = 0.05


class Infrastructure(Model):
    tool: Literal["prometheus"] = "prometheus"
    dashboards: Optional[Literal["grafana"]] = "grafana"


class Monitoring(Model):
    data_drift: Optional[DataDrift] = None
    model_performance: Optional[ModelPerformance] = None
    infrastructure: Optional[Infrastructure] = None


class TrafficSplit(Model):
    control: Fraction = 1.0
    treatment: Fraction = 0.0

    @model_validator(mode="after")
    def _sums(self) -> "TrafficSplit":
        if abs(self.control + self.treatment - 1.0) > 1e-6:
            raise ValueError(f"control and treatment must add up to 100%, got "
                             f"{self.control:.0%} + {self.treatment:.0%}")
        return self


class ABTesting(Model):
    framework: Literal["ray_serve"] = "ray_serve"
    mode: Literal["split", "shadow"] = "split"
    traffic_split: TrafficSplit = TrafficSplit(control=0.5, treatment=0.5)
    assignment_key: Optional[str] = None
    success_metrics: list[str] = ["conversion_rate"]
    duration: Optional[Duration] = None
    significance: float = Field(0.95, gt=0, lt=1)

    @field_validator("framework", mode="before")
    @classmethod
    def _framework(cls, value: Any) -> Any:
        if value != "ray_serve":
            raise ValueError(f"framework {value} is not supported: A/B testing is built into the "
                             "Ray Serve app (framework: ray_serve, or leave it out)")
        return value


_TRIGGER_RE = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(>=|<=|>|<)\s*(\S+)\s*$")


class Trigger(ShortForm, Model):
    short_form: ClassVar[dict] = {"type": "string", "pattern": r"^\s*[a-z_][a-z0-9_]*\s*(>=|<=|>|<)\s*\S+\s*$"}

    metric: str
    op: Literal[">", ">=", "<", "<="]
    threshold: float
    text: str

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _TRIGGER_RE.match(value)
        if not match:
            raise ValueError(f"a trigger reads like `error_rate > 5%` or `latency_p99 > 500ms`, got {value!r}")
        threshold, _ = units.parse_quantity(match.group(3))
        return {"metric": match.group(1), "op": match.group(2), "threshold": threshold, "text": value}

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        known = ("error_rate", "latency_p50", "latency_p95", "latency_p99", "data_drift_score",
                 "accuracy_drop", "prediction_drift")
        if value not in known:
            raise ValueError(f"unknown trigger metric {value!r}; known: {', '.join(known)}")
        return value


RollbackStep = Literal["automatic_rollback_to_previous", "alert_on_call", "preserve_logs_for_analysis"]


def _procedure(value: Any) -> Any:
    # The seed writes the procedure as one numbered string: "1. a 2. b 3. c".
    if isinstance(value, str):
        return [s for s in re.split(r"\s*\d+\.\s*", value) if s.strip()]
    return value


class Rollback(Model):
    triggers: list[Trigger] = []
    window: Duration = 300.0
    procedure: Annotated[list[RollbackStep], BeforeValidator(_procedure), json_schema({
        "anyOf": [{"type": "array", "items": {"enum": list(RollbackStep.__args__)}},
                  {"type": "string", "description": "1. step 2. step ..."}]})] = [
        "automatic_rollback_to_previous", "alert_on_call", "preserve_logs_for_analysis"]

