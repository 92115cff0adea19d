"""What every spec section is built from: a strict pydantic model (unknown keys are errors, values
frozen) and the seed's spellings of shares, durations and metric names as field types."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

from pipeline import units
from pipeline.metrics.names import METRIC_ALIASES


def json_schema(schema: dict) -> WithJsonSchema:
    return WithJsonSchema(schema)


Fraction = Annotated[float, BeforeValidator(units.parse_fraction),
                     json_schema({"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\d+(\.\d+)?%$"}],
                            "description": "a share: 50%, 0.5"})]
Duration = Annotated[float, BeforeValidator(units.parse_duration),
                     json_schema({"anyOf": [{"type": "number"}, {"type": "string"}],
                            "description": "seconds, or 100ms / 5m / 2h / 2_weeks / hourly / daily"})]


def metric_name(value: object) -> object:
    return METRIC_ALIASES.get(value, value) if isinstance(value, str) else value


MetricName = Annotated[str, BeforeValidator(metric_name)]


class Model(BaseModel):
    """Base of every spec section: unknown keys are errors."""
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=False)


class ShortForm:
    """A section the seed also writes in a short form (`authentication: bearer`, a bare list of
    expectations, `latency_p99 > 500ms`): the JSON Schema offers both forms."""
    short_form: ClassVar[dict] = {"type": "string"}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        return {"anyOf": [handler(core_schema), cls.short_form]}
