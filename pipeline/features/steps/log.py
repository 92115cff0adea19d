"""log: log1p(x)."""

from __future__ import annotations

import numpy as np

from pipeline.features.steps.base import Step, count, register


@register
class Log(Step):
    """log1p(x) for x >= 0; a negative x gives NaN (then the final median imputation) and is
    counted in stats["negative_log_inputs"]."""

    method = "log"
    aliases = ("log_transform",)
    counts = ("negative_log_inputs",)

    def fit_column(self, column, x):
        return {}

    def apply(self, column, x, small, counters):
        negative = x < 0
        if counters is not None:
            count(counters, "negative_log_inputs", column, np.count_nonzero(negative))
        return np.log1p(np.where(negative, np.nan, x))

    def describe(self):
        return "log1p(x); x < 0 -> null"
