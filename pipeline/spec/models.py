"""The model sections: which families to train (`baseline_models`, `advanced_models`, their
`model_params`), how Ray Train scales them (`scaling`) and the hyperparameter search (`tuning`).
The families and which problem type each fits are the models room's (pipeline.models.families)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from pipeline.metrics.names import DEFAULT_OBJECTIVE, METRIC_ALIASES
from pipeline.models.families import AVAILABLE, families_for
from pipeline.spec.base import Duration, Model, json_schema

ModelFamily = Literal[AVAILABLE]  # type: ignore[valid-type]



class Scaling(Model):
    num_workers: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = "auto"
    cpus_per_worker: Union[Literal["auto"], Annotated[float, Field(gt=0)]] = "auto"
    use_gpu: bool = False


# --------------------------------------------------------------------------- tuning

class SearchRange(Model):
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "SearchRange":
        if self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SearchChoice(Model):
    values: list[Any] = Field(min_length=1)


def _search_dimension(value: Any) -> Any:
    """`[low, high, log]`, `[low, high, int]`, `[low, high, uniform]` are ranges; any other list
    is a choice; a dict may spell either out ({low, high, log, integer} or {values}).

    The member model is built here, so a bad range reports its own problem once instead of
    pydantic also trying (and reporting) the other member of the union."""
    if isinstance(value, list):
        if len(value) == 3 and isinstance(value[2], str) and value[2] in (
                "log", "int", "uniform", "float", "log_int", "int_log"):
            kind = value[2]
            value = {"low": value[0], "high": value[1], "log": "log" in kind, "integer": "int" in kind}
        else:
            value = {"values": value}
    elif isinstance(value, (int, float, str, bool)):
        value = {"values": [value]}
    if isinstance(value, dict):
        model = SearchChoice if "values" in value else SearchRange
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where + ': ' if where else ''}"
                             f"{first['msg'].removeprefix('Value error, ')}") from None
    return value


SearchDimension = Annotated[Union[SearchRange, SearchChoice], BeforeValidator(_search_dimension),
                            json_schema({"anyOf": [{"type": "array"}, {"type": "object"}],
                                   "description": "[low, high, log|int|uniform] or a list of choices"})]


class Tuning(Model):
    method: Literal["optuna", "hyperopt", "random"] = "optuna"
    objective: str = "auto"                    # maximize_<metric> | minimize_<metric> | auto
    n_trials: int = Field(20, ge=1)
    max_concurrent_trials: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = "auto"
    models: Optional[list[ModelFamily]] = None
    search_space: dict[str, SearchDimension] = {}
    time_budget: Optional[Duration] = None
    early_stopping: Literal["asha", "none"] = "asha"

    @field_validator("objective")
    @classmethod
    def _objective(cls, value: str) -> str:
        if value != "auto" and not re.match(r"^(maximize|minimize)_[a-z0-9_]+$", value):
            raise ValueError("objective is maximize_<metric> or minimize_<metric>, e.g. maximize_f1")
        return value

    def objective_parts(self, problem_type: str) -> tuple[str, str]:
        """(mode 'max'|'min', metric name)."""
        if self.objective == "auto":
            metric, mode = DEFAULT_OBJECTIVE[problem_type]
            return mode, metric
        direction, metric = self.objective.split("_", 1)
        return ("max" if direction == "maximize" else "min"), METRIC_ALIASES.get(metric, metric)


def check(spec, known_metrics: set[str]) -> list[tuple[tuple, str]]:
    """Families that fit the problem type; a tuning objective the spec measures."""
    problems: list[tuple[tuple, str]] = []
    allowed = families_for(spec.problem_type)
    for section in ("baseline_models", "advanced_models"):
        for i, family in enumerate(getattr(spec, section)):
            if family not in allowed:
                hint = (" (use linear_regression)" if family == "logistic_regression" else
                        " (use logistic_regression)" if family == "linear_regression" else "")
                problems.append(((section, i), f"model family {family} does not fit problem_type "
                                               f"{spec.problem_type}{hint}"))
    if not spec.model_families:
        problems.append((("baseline_models",), "list at least one model in baseline_models or advanced_models"))
    if spec.tuning and spec.tuning.objective != "auto":
        _, metric = spec.tuning.objective_parts(spec.problem_type)
        if metric not in known_metrics:
            problems.append((("tuning", "objective"), f"{metric} is not a metric of this spec "
                                                      f"(known: {', '.join(sorted(known_metrics))})"))
    return problems
