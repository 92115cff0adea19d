"""The `transformations` section: feature steps fitted on the training split (scalers, encoders,
imputation, ...) and derived features written as safe formulas.

The methods, their aliases and their option keys are the feature step registry's
(pipeline.features.steps): a new method is a new step class, and this file does not change."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import (
    BeforeValidator,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from pipeline.features.steps import registry
from pipeline.features.transformation import rules
from pipeline.formula import Formula, FormulaError
from pipeline.spec.base import Model

TransformMethod = Literal[registry.methods(spec_only=True)]
_METHOD_ALIASES = registry.aliases()


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


def _method(value: object) -> object:
    return _METHOD_ALIASES.get(value, value) if isinstance(value, str) else value


class _TransformationRules(Model):
    """The rules of a transformation that no single field states (pipeline.features.
    transformation, shared with FeaturePipeline.from_spec); its fields come from the registry."""

    @model_validator(mode="after")
    def _one_kind(self):
        for key, value in rules(self).items():
            object.__setattr__(self, key, value)
        return self


Transformation = create_model(
    "Transformation",
    __base__=_TransformationRules,
    __module__=__name__,
    name=(str, ...),
    columns=(Optional[list[str]], None),
    method=(Optional[Annotated[TransformMethod, BeforeValidator(_method)]], None),
    derived=(Optional[list[DerivedFeature]], None),
    # an option no method of the transformation reads is accepted and ignored, as every key is
    # a field of every transformation
    **{o.key: (o.annotation, Field(o.default, **o.constraints)) for o in registry.spec_options()},
)
Transformation.__qualname__ = "Transformation"


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
