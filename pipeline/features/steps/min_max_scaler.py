"""min_max_scaler: (x - min) / (max - min)."""

from __future__ import annotations

import numpy as np

from pipeline.features.steps.base import Step, register, summary


@register
class MinMaxScaler(Step):
    """(x - min) / (max - min); max == min -> divide by 1. An all-null training column gives
    min 0, max 1. Values outside the training range land outside [0, 1] (no refit)."""

    method = "min_max_scaler"
    aliases = ("minmax_scaler",)

    def fit_column(self, column, x):
        valid = x[~np.isnan(x)]
        if valid.size == 0:
            return {"min": 0.0, "max": 1.0}
        return {"min": float(valid.min()), "max": float(valid.max())}

    def compile_column(self, column, fitted):
        span = fitted["max"] - fitted["min"]
        return fitted["min"], span if span > 0 else 1.0

    def apply(self, column, x, small, counters):
        low, span = self._compiled[column]
        np.subtract(x, low, out=x)
        return np.divide(x, span, out=x)

    def describe_column(self, column, fitted):
        return f"min={summary(fitted['min'])} max={summary(fitted['max'])}"
