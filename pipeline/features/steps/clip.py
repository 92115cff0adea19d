"""clip: np.clip to lower/upper."""

from __future__ import annotations

from typing import Optional

import numpy as np

from pipeline.features.steps.base import Option, Step, register

LOWER = Option("lower", Optional[float])
UPPER = Option("upper", Optional[float])


@register
class Clip(Step):
    """np.clip to lower/upper (either may be absent, not both)."""

    method = "clip"
    options = (LOWER, UPPER)
    examples = ({"lower": -0.5}, {"upper": 0.25}, {"lower": -1, "upper": 1})

    @classmethod
    def check_spec(cls, t):
        if t.lower is None and t.upper is None:
            return "clip needs lower and/or upper"
        return None

    def fit_column(self, column, x):
        return {}

    def compile_column(self, column, fitted):
        lower, upper = self.options["lower"], self.options["upper"]
        return (None if lower is None else float(lower)), (None if upper is None else float(upper))

    def apply(self, column, x, small, counters):
        lower, upper = self._compiled[column]
        if lower is not None:
            x = np.maximum(x, lower)
        if upper is not None:
            x = np.minimum(x, upper)
        return x

    def describe(self):
        return f"lower={self.options['lower']}, upper={self.options['upper']}"
