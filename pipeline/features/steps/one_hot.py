"""one_hot: one 0/1 column `col=value` per training category."""

from __future__ import annotations

from typing import Optional

import numpy as np

from pipeline.features.steps.base import Option, count, register
from pipeline.features.steps.encoding import CATEGORIES, UNKNOWN, Encoder
from pipeline.features.values import Indicator, as_labels, lookup

NULL_LABEL = "__null__"
OTHER_LABEL = "__other__"
MAX_CATEGORIES = Option("max_categories", Optional[int], constraints={"ge": 1})


@register
class OneHot(Encoder):
    """One 0/1 column `col=value` per category: sorted distinct training values as strings (or
    the `categories` given for the column). Null gets its own column `col=__null__` only if the
    training data had nulls; otherwise a null row is all-zero. Unknown values at transform time
    give an all-zero row and are counted. With `max_categories: N` the N most frequent training
    values are kept (ties by value) and the other training values go to `col=__other__`;
    unknown values then also go to `__other__` (as sklearn's infrequent_if_exist) and are still
    counted as unknown."""

    method = "one_hot"
    aliases = ("onehot", "one_hot_encoder")
    options = (CATEGORIES, MAX_CATEGORIES)
    replaces = "one-hot encoded"
    examples = ({}, {"max_categories": 2}, {"categories": {"x": ["b", "a", "2"]}})

    def fit_labels(self, column, counts, has_null):
        given = self.options["categories"].get(column)
        if given is not None:
            return {"categories": list(given), "null": has_null, "other": []}
        limit = self.options.get("max_categories")
        categories = sorted(counts)
        other: list[str] = []
        if limit is not None and len(categories) > limit:
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            categories = sorted(k for k, _ in ranked[:limit])
            other = sorted(k for k, _ in ranked[limit:])
        return {"categories": categories, "null": has_null, "other": other}

    def compile_column(self, column, fitted):
        cats = fitted["categories"]
        mapping = {c: i for i, c in enumerate(cats)}
        k = len(cats)
        null_code = -2
        if fitted["null"]:
            null_code, k = k, k + 1
        unknown = -1
        if fitted["other"]:
            unknown, k = k, k + 1
            for c in fitted["other"]:
                mapping[c] = unknown
        names = [f"{column}={c}" for c in cats]
        if fitted["null"]:
            names.append(f"{column}={NULL_LABEL}")
        if fitted["other"]:
            names.append(f"{column}={OTHER_LABEL}")
        return mapping, null_code, unknown, names

    def output_names(self, column):
        return list(self._compiled[column][3])

    def apply(self, column, x, small, counters):
        mapping, null_code, unknown, names = self._compiled[column]
        codes = lookup(as_labels(x, small), mapping, null_code, UNKNOWN, small)
        is_unknown = codes == UNKNOWN
        if counters is not None:
            count(counters, "unknown_categories", column, np.count_nonzero(is_unknown))
        codes[is_unknown] = unknown
        return {name: Indicator(codes, j) for j, name in enumerate(names)}

    def describe_column(self, column, fitted):
        text = super().describe_column(column, fitted)
        if fitted.get("null"):
            text += " + null"
        if fitted.get("other"):
            text += f" + {OTHER_LABEL} ({len(fitted['other'])} values)"
        return text
