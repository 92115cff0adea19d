"""impute: fill nulls with a value learnt from the training split (or a constant)."""

from __future__ import annotations

from typing import Literal, Optional, Union

import numpy as np

from pipeline.features.errors import FeatureError
from pipeline.features.steps.base import Option, Step, count, register, summary
from pipeline.features.values import (
    CATEGORICAL,
    NUMERIC,
    canon,
    label_counts,
    null_mask,
)


def _constant_needs_fill_value(t) -> Optional[str]:
    if t.strategy == "constant" and t.fill_value is None:
        return "strategy constant needs fill_value"
    return None


STRATEGY = Option("strategy", Optional[Literal["mean", "median", "most_frequent", "constant"]],
                  check=_constant_needs_fill_value)
FILL_VALUE = Option("fill_value", Optional[Union[float, str]])


@register
class Impute(Step):
    """strategy mean | median (the default) | most_frequent | constant (fill_value).
    Categorical columns (before encoding) take most_frequent or constant. An all-null training
    column fills with 0.0 (numeric) or not at all (categorical: it stays null)."""

    method = "impute"
    aliases = ("imputation", "imputer")
    options = (STRATEGY, FILL_VALUE)
    accepts = frozenset({NUMERIC, CATEGORICAL})
    counts = ("nulls_imputed",)
    examples = ({}, {"strategy": "mean"}, {"strategy": "most_frequent"},
                {"strategy": "constant", "fill_value": -1}, {"strategy": "constant", "fill_value": "zz"})

    @classmethod
    def spec_defaults(cls, t):
        return {"strategy": "median"} if t.strategy is None else {}

    @classmethod
    def kind_after(cls, column, kind, values):
        strategy, fill_value = values["strategy"], values["fill_value"]
        if kind == CATEGORICAL and strategy in ("mean", "median"):
            raise FeatureError(f"column {column!r} is categorical; impute it with strategy "
                               f"most_frequent or constant", column=column)
        if kind == NUMERIC and strategy == "constant":
            try:
                float(fill_value)
            except (TypeError, ValueError):
                raise FeatureError(f"fill_value {fill_value!r} is not a number but column "
                                   f"{column!r} is numeric", column=column) from None
        return super().kind_after(column, kind, values)

    def fit_column(self, column, x):
        strategy = self.options["strategy"]
        if x.dtype == object:  # still categorical labels
            if strategy == "constant":
                return {"value": canon(self.options["fill_value"])}
            counts, _ = label_counts(x)
            if not counts:
                return {"value": None}
            top = max(counts.values())
            return {"value": min(k for k, v in counts.items() if v == top)}
        if strategy == "constant":
            return {"value": float(self.options["fill_value"])}
        valid = x[~np.isnan(x)]
        if valid.size == 0:
            return {"value": 0.0}
        if strategy == "mean":
            return {"value": float(np.mean(valid))}
        if strategy == "median":
            return {"value": float(np.median(valid))}
        uniques, counts = np.unique(valid, return_counts=True)
        return {"value": float(uniques[int(np.argmax(counts))])}

    def compile_column(self, column, fitted):
        return fitted["value"]

    def apply(self, column, x, small, counters):
        value = self._compiled[column]
        if x.dtype == object:
            if value is None:  # all-null in training: nothing to fill with
                filled = 0
            else:
                missing = null_mask(x)
                filled = int(np.count_nonzero(missing))
                if filled:
                    x = x.copy()
                    x[missing] = value
        else:
            missing = np.isnan(x)
            filled = int(np.count_nonzero(missing))
            if filled:
                x[missing] = value
        if counters is not None:
            count(counters, "nulls_imputed", column, filled)
        return x

    @property
    def label(self):
        return f"impute ({self.options['strategy']})"

    def describe(self):
        if self.fitted is None and self.options.get("strategy") == "constant":
            return f"fill_value={self.options['fill_value']!r}; not fitted"
        return super().describe()

    def describe_column(self, column, fitted):
        value = fitted["value"]
        return f"fill={summary(value) if isinstance(value, float) else repr(value)}"
