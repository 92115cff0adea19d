"""robust_scaler: (x - median) / IQR."""

from __future__ import annotations

import numpy as np

from pipeline.features.steps.base import Step, register, summary

# sklearn's bound for a constant column (preprocessing._handle_zeros_in_scale)
_CONSTANT = 10 * np.finfo(np.float64).eps


@register
class RobustScaler(Step):
    """(x - median) / (q75 - q25), with the median and the 25th/75th percentiles (linear
    interpolation) of the training values, as sklearn.preprocessing.RobustScaler's defaults.
    An IQR of (nearly) 0 -> divide by 1; an all-null training column gives median 0, IQR 1."""

    method = "robust_scaler"
    aliases = ("robust",)

    def fit_column(self, column, x):
        valid = x[~np.isnan(x)]
        if valid.size == 0:
            return {"center": 0.0, "scale": 1.0}
        q25, q75 = np.percentile(valid, (25, 75))
        scale = float(q75 - q25)
        return {"center": float(np.median(valid)), "scale": scale if scale >= _CONSTANT else 1.0}

    def compile_column(self, column, fitted):
        return fitted["center"], fitted["scale"]

    def apply(self, column, x, small, counters):
        center, scale = self._compiled[column]
        np.subtract(x, center, out=x)
        return np.divide(x, scale, out=x)

    def describe_column(self, column, fitted):
        return f"median={summary(fitted['center'])} iqr={summary(fitted['scale'])}"
