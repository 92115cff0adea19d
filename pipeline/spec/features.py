"""The `transformations` section: feature steps fitted on the training split (scalers, encoders,
imputation, ...) and derived features written as safe formulas."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BeforeValidator, Field, field_validator, model_validator

from pipeline.formula import Formula, FormulaError
from pipeline.spec.base import Model

TransformMethod = Literal["standard_scaler", "min_max_scaler", "one_hot", "ordinal", "impute",
                          "log", "clip"]
_METHOD_ALIASES = {"imputation": "impute", "imputer": "impute", "onehot": "one_hot",
                   "one_hot_encoder": "one_hot", "minmax_scaler": "min_max_scaler",
                   "ordinal_encoder": "ordinal", "log_transform": "log", "standard": "standard_scaler"}


class DerivedFeature(Model):
    name: str
    formula: str

    @field_validator("formula")
    @classmethod
    def _safe(cls, value: str) -> str:
        try:
            Formula.parse(value)
        except FormulaError as exc:
            raise ValueError(str(exc)) from None
        return value


class Transformation(Model):
    name: str
    columns: Optional[list[str]] = None
    method: Optional[Annotated[TransformMethod, BeforeValidator(
        lambda v: _METHOD_ALIASES.get(v, v) if isinstance(v, str) else v)]] = None
    derived: Optional[list[DerivedFeature]] = None
    strategy: Optional[Literal["mean", "median", "most_frequent", "constant"]] = None  # impute
    fill_value: Optional[Union[float, str]] = None                                    # impute constant
    lower: Optional[float] = None                                                      # clip
    upper: Optional[float] = None                                                      # clip
    categories: Optional[dict[str, list[Union[str, int, float, bool]]]] = None         # ordinal order
    max_categories: Optional[int] = Field(None, ge=1)                                  # one_hot

    @model_validator(mode="after")
    def _one_kind(self) -> "Transformation":
        if self.derived is not None:
            if self.method is not None or self.columns is not None:
                raise ValueError("a transformation has either derived or method+columns, not both")
            return self
        if self.method is None or not self.columns:
            raise ValueError("a transformation needs method and columns (or derived)")
        if self.method == "impute" and self.strategy is None:
            object.__setattr__(self, "strategy", "median")
        if self.strategy == "constant" and self.fill_value is None:
            raise ValueError("strategy constant needs fill_value")
        if self.method == "clip" and self.lower is None and self.upper is None:
            raise ValueError("clip needs lower and/or upper")
        return self



def check(spec) -> list[tuple[tuple, str]]:
    problems: list[tuple[tuple, str]] = []
    seen_derived: set[str] = set()
    for i, t in enumerate(spec.transformations):
        for j, d in enumerate(t.derived or []):
            if d.name in seen_derived:
                problems.append((("transformations", i, "derived", j, "name"),
                                 f"derived feature {d.name!r} is defined twice"))
            seen_derived.add(d.name)
    return problems
