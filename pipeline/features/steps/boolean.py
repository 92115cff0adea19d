"""boolean: the implicit step of every boolean input column (`auto_boolean`)."""

from __future__ import annotations

from pipeline.features.steps.base import Step, register
from pipeline.features.values import BOOLEAN


@register
class Boolean(Step):
    """True -> 1.0, False -> 0.0, null -> NaN (then the final imputation). The conversion
    happens when the raw value is read (values.to_bool), because a formula reads the boolean
    as a number too; the step records it in the pipeline and its description."""

    method = "boolean"
    accepts = frozenset({BOOLEAN})
    in_spec = False
    applies = False

    def fit_column(self, column, x):
        return {}

    def apply(self, column, x, small, counters):
        return x

    def describe(self):
        return "True -> 1.0, False -> 0.0"
