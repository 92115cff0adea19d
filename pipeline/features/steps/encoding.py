"""What the category encoders (one_hot, ordinal) share: the `categories` option, reading a
column as labels, counting unknown values, and the categories they answer for."""

from __future__ import annotations

from typing import Optional, Union

from pipeline.features.errors import FeatureError
from pipeline.features.steps.base import Option, Step
from pipeline.features.values import (
    CATEGORICAL,
    NUMERIC,
    as_labels,
    canon,
    label_counts,
)

CATEGORIES = Option("categories", Optional[dict[str, list[Union[str, int, float, bool]]]])
UNKNOWN = -3  # lookup marker: a value the encoder did not see in training


class Encoder(Step):
    """Base of the steps that read a column as category labels (numbers become labels: 1, 1.0
    and "1" are one category)."""

    accepts = frozenset({NUMERIC, CATEGORICAL})
    counts = ("unknown_categories",)

    @classmethod
    def state_options(cls, values, columns):
        options = super().state_options(values, columns)
        given = {}
        for col, listed in (values["categories"] or {}).items():
            if col not in columns:
                raise FeatureError(f"categories given for {col!r}, which the transformation "
                                   f"does not encode", column=col)
            labels = [canon(v) for v in listed]
            if len(set(labels)) != len(labels) or None in labels:
                raise FeatureError(f"categories for {col!r} repeat a value or hold a null",
                                   column=col)
            given[col] = labels
        options["categories"] = given
        return options

    def fit_column(self, column, x):
        counts, has_null = label_counts(as_labels(x, small=False))
        return self.fit_labels(column, counts, has_null)

    def fit_labels(self, column: str, counts: dict[str, int], has_null: bool) -> dict:
        """The fitted state from how often each training label occurs."""
        raise NotImplementedError

    def known_categories(self):
        if self.fitted is None:
            return {}
        return {col: {str(v) for v in [*(f.get("categories") or []), *(f.get("other") or [])]}
                for col, f in self.fitted.items()}

    def describe_column(self, column, fitted):
        cats = fitted["categories"]
        shown = ", ".join(cats[:5]) + (f", … (+{len(cats) - 5})" if len(cats) > 5 else "")
        return f"{len(cats)} categories [{shown}]"
