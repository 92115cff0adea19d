"""standard_scaler: (x - mean) / std."""

from __future__ import annotations

import math

import numpy as np

from pipeline.features.steps.base import Step, register, summary


@register
class StandardScaler(Step):
    """(x - mean) / std, population std (ddof=0, as sklearn); std 0 -> 1. An all-null training
    column gives mean 0, std 1."""

    method = "standard_scaler"
    aliases = ("standard",)

    def fit_column(self, column, x):
        valid = x[~np.isnan(x)]
        if valid.size == 0:
            return {"mean": 0.0, "std": 1.0}
        std = float(np.std(valid))
        return {"mean": float(np.mean(valid)), "std": std if std > 0 and math.isfinite(std) else 1.0}

    def compile_column(self, column, fitted):
        return fitted["mean"], fitted["std"]

    def apply(self, column, x, small, counters):
        mean, std = self._compiled[column]
        np.subtract(x, mean, out=x)
        return np.divide(x, std, out=x)

    def describe_column(self, column, fitted):
        return f"mean={summary(fitted['mean'])} std={summary(fitted['std'])}"
