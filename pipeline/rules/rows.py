"""ColumnRules -> batch scoring's row checks: which rows of a pandas batch a model can take
(nullable, number / boolean, range, allowed values, the rules POST /predict applies to a JSON
record). Batch scoring gives each failing row a null prediction and the reason.

Files carry text, so this compiler reads values as the feature pipeline will:
- a number is anything float() reads after trimming ('12.5', ' 3e2 '), booleans included;
- a boolean is what the feature pipeline turns into 0 / 1 ('yes', 'no', 0, 1, ...);
- allowed values compare as category labels (1, 1.0 and '1' are the same label);
- a value list replaces the range, as in serving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from pipeline.features.values import canon, to_bool
from pipeline.rules.model import ColumnRules

if TYPE_CHECKING:
    from pipeline.predictor import InputSchema


def row_errors(frame: pd.DataFrame, schema: "InputSchema") -> np.ndarray:
    """One entry per row: None when the model can take the row, else why not ("col: reason")."""
    out = np.full(len(frame), None, dtype=object)

    def flag(mask: np.ndarray, message: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask):
            text = message(i)
            out[i] = text if out[i] is None else f"{out[i]}; {text}"

    for spec in schema.fields:
        series = frame[spec.name]
        null = series.isna().to_numpy(dtype=bool)
        if not spec.nullable:
            flag(null, lambda i, c=spec.name: f"{c}: null not allowed")
        raw = series.to_numpy(dtype=object)
        if spec.is_number:
            numbers, bad = _as_numbers(series)
            flag(bad, lambda i, c=spec.name: f"{c}: not a number ({raw[i]!r})")
            if spec.record_range:
                low = -np.inf if spec.minimum is None else spec.minimum
                high = np.inf if spec.maximum is None else spec.maximum
                with np.errstate(invalid="ignore"):
                    outside = ~bad & ~null & ((numbers < low) | (numbers > high))
                flag(outside, lambda i, c=spec.name, s=spec: f"{c}: {_bounds(s)} ({raw[i]!r})")
        elif spec.kind == "boolean" and not pd.api.types.is_bool_dtype(series):
            bad = np.zeros(len(frame), dtype=bool)
            for i in np.flatnonzero(~null):
                try:
                    to_bool(raw[i], spec.name)
                except ValueError:
                    bad[i] = True
            flag(bad, lambda i, c=spec.name: f"{c}: not a boolean ({raw[i]!r})")
        if spec.values is not None:
            allowed = {canon(v) for v in spec.values}
            codes, uniques = pd.factorize(series, use_na_sentinel=True)
            ok = np.array([canon(u) in allowed for u in uniques] + [True], dtype=bool)
            flag(~ok[codes], lambda i, c=spec.name, s=spec:
                 f"{c}: not one of {list(s.values)} ({raw[i]!r})")
    return out


def _bounds(rules: ColumnRules) -> str:
    if rules.minimum is not None and rules.maximum is not None:
        return f"outside [{rules.minimum:g}, {rules.maximum:g}]"
    return f"below {rules.minimum:g}" if rules.minimum is not None else f"above {rules.maximum:g}"


def _as_numbers(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of non-null values that are not numbers)."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(series), dtype=bool)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    values = np.full(len(uniques) + 1, np.nan)
    bad = np.zeros(len(uniques) + 1, dtype=bool)
    for j, u in enumerate(uniques):
        if isinstance(u, (bool, np.bool_, int, float, np.integer, np.floating)):
            values[j] = float(u)
            continue
        try:
            values[j] = float(str(u).strip())
        except ValueError:
            bad[j] = True
    return values[codes], bad[codes]


def reason_of(message: str) -> str:
    """"tenure_months: outside [0, 100] (150)" -> "tenure_months: outside [0, 100]", for counting."""
    return message.rsplit(" (", 1)[0] if message.endswith(")") else message
