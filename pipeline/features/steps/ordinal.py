"""ordinal: a category's index in the given or sorted training categories."""

from __future__ import annotations

import numpy as np

from pipeline.features.steps.base import count, register
from pipeline.features.steps.encoding import CATEGORIES, UNKNOWN, Encoder
from pipeline.features.values import NUMERIC, as_labels, lookup


@register
class Ordinal(Encoder):
    """Index in `categories[col]` if given, else in the sorted training values; unknown -> -1
    (counted); null -> NaN (so the final imputation fills it)."""

    method = "ordinal"
    aliases = ("ordinal_encoder",)
    options = (CATEGORIES,)
    produces = NUMERIC
    examples = ({}, {"categories": {"x": ["b", "a", "2"]}})

    def fit_labels(self, column, counts, has_null):
        given = self.options["categories"].get(column)
        return {"categories": list(given) if given is not None else sorted(counts)}

    def compile_column(self, column, fitted):
        return {c: i for i, c in enumerate(fitted["categories"])}

    def apply(self, column, x, small, counters):
        codes = lookup(as_labels(x, small), self._compiled[column], -2, UNKNOWN, small)
        is_unknown = codes == UNKNOWN
        if counters is not None:
            count(counters, "unknown_categories", column, np.count_nonzero(is_unknown))
        out = codes.astype(np.float64)
        out[is_unknown] = -1.0
        out[codes == -2] = np.nan
        return out
