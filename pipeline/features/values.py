"""Raw values -> the canonical arrays every step works on, and the array helpers steps share.

The per-value functions (`is_null`, `canon`, `to_float`, `to_bool`) are the single source of
truth for both paths: the record path calls them on every value, the frame path on every
distinct value (pd.factorize) and gathers, so both paths hand the steps the same arrays.

No pandas at import: the spec imports the step registry, which imports this module, and loading
a spec must not pay for pandas. pandas is imported where the frame path needs it (a local import
costs nothing next to a factorize).
"""

from __future__ import annotations

import math
import sys
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from pipeline.features.errors import FeatureError

NUMERIC, CATEGORICAL, BOOLEAN = "numeric", "categorical", "boolean"
KIND_ALIASES = {
    "numeric": NUMERIC, "number": NUMERIC, "integer": NUMERIC, "int": NUMERIC, "float": NUMERIC,
    "categorical": CATEGORICAL, "category": CATEGORICAL, "string": CATEGORICAL, "str": CATEGORICAL,
    "text": CATEGORICAL, "object": CATEGORICAL,
    "boolean": BOOLEAN, "bool": BOOLEAN,
}
TEXT_NULL = "\x00"  # how a null category reaches a formula (never equal to a real label)


def normalise_kind(kind: Any, column: str) -> str:
    normal = KIND_ALIASES.get(str(kind).lower()) if kind is not None else None
    if normal is None:
        raise FeatureError(f"column {column!r} has kind {kind!r}; a feature column is numeric, "
                           f"categorical or boolean (derive a number from dates, or exclude them)",
                           column=column)
    return normal


# --------------------------------------------------------------------------- scalar conversion

def is_null(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (float, np.floating)):
        return v != v
    pd = sys.modules.get("pandas")  # pd.NA / pd.NaT cannot exist before pandas is imported
    return pd is not None and (v is pd.NA or v is pd.NaT)


def canon(v: Any) -> Optional[str]:
    """The category label of a raw value: compared as strings, integral numbers without '.0'."""
    if type(v) is str:
        return v
    if v is None:
        return None
    # bool before int (bool is an int); numbers before is_null, which only NaN/NA/NaT pass
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return None
        if math.isfinite(f) and f.is_integer():
            return str(int(f))
        return repr(f)
    if is_null(v):
        return None
    return str(v)


def to_float(v: Any, column: str) -> float:
    t = type(v)
    if t is float:
        return v
    if t is int:
        return float(v)
    if v is None:
        return math.nan
    if isinstance(v, (bool, np.bool_)):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, str):
        text = v.strip()
        if not text:
            return math.nan
        try:
            return float(text)
        except ValueError:
            raise FeatureError(f"column {column!r} is numeric but holds {v!r}",
                               column=column) from None
    if is_null(v):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        raise FeatureError(f"column {column!r} is numeric but holds {v!r}", column=column) from None


_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def to_bool(v: Any, column: str) -> float:
    if v is True or v is False:
        return 1.0 if v else 0.0
    if is_null(v):
        return math.nan
    if isinstance(v, np.bool_):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float, np.integer, np.floating)):
        if v == 0 or v == 1:
            return float(v)
    elif isinstance(v, str):
        text = v.strip().lower()
        if text in _TRUE:
            return 1.0
        if text in _FALSE:
            return 0.0
        if not text:
            return math.nan
    raise FeatureError(f"column {column!r} is boolean but holds {v!r}", column=column)


# --------------------------------------------------------------------------- array helpers

def finite(x: np.ndarray) -> np.ndarray:
    """x (owned, float64) with +-inf replaced by NaN, in place."""
    bad = ~np.isfinite(x)
    if bad.any():
        x[bad] = np.nan
    return x


def object_array(items: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def null_mask(values: np.ndarray) -> np.ndarray:
    return np.equal(values, None)


def lookup(values: np.ndarray, mapping: Mapping[str, int], null_code: int, unknown: int,
           small: bool) -> np.ndarray:
    """Category labels -> int codes (null -> null_code, not in mapping -> unknown)."""
    if small:
        get = mapping.get
        return np.fromiter((null_code if v is None else get(v, unknown) for v in values),
                           dtype=np.int64, count=len(values))
    import pandas as pd

    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.fromiter((mapping.get(u, unknown) for u in uniques), dtype=np.int64,
                        count=len(uniques))
    return np.append(table, np.int64(null_code))[codes]


def labels_from_numbers(x: np.ndarray, small: bool) -> np.ndarray:
    """A numeric column that is about to be encoded: float64 -> canonical labels."""
    if small:
        return object_array([canon(v) for v in x.tolist()])
    import pandas as pd

    codes, uniques = pd.factorize(x, use_na_sentinel=True)
    table = object_array([canon(u) for u in uniques.tolist()] + [None])
    return table[codes]


def as_labels(x: np.ndarray, small: bool) -> np.ndarray:
    """A column an encoder reads: labels as they are, numbers turned into labels."""
    return x if x.dtype == object else labels_from_numbers(x, small)


def label_counts(labels: np.ndarray) -> tuple[dict[str, int], bool]:
    """How often each (non-null) label occurs, and whether there were nulls."""
    import pandas as pd

    present = labels[~null_mask(labels)]
    counts = pd.Series(present, dtype=object).value_counts(sort=False)
    return {str(k): int(v) for k, v in counts.items()}, len(present) < len(labels)


def text_for_formula(values: np.ndarray) -> np.ndarray:
    return np.array([TEXT_NULL if v is None else v for v in values], dtype=str)


class Indicator:
    """One one-hot output column, kept as (codes, j) until it is written into the output matrix
    (a dense float64 array per category would be made only to be copied there)."""

    __slots__ = ("codes", "j")

    def __init__(self, codes: np.ndarray, j: int):
        self.codes, self.j = codes, j

    def dense(self) -> np.ndarray:
        return (self.codes == self.j).astype(np.float64)


def fill(matrix: np.ndarray, j: int, column) -> None:
    if isinstance(column, Indicator):
        matrix[:, j] = column.codes == column.j
    else:
        matrix[:, j] = column


# --------------------------------------------------------------------------- reading raw columns

def read_series(series, kind: str, col: str, text: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """A frame column -> (values, the text a formula reads or None): labels (object) for a
    categorical column, float64 otherwise."""
    import pandas as pd

    if kind == CATEGORICAL:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        table = object_array([canon(u) for u in list(uniques)] + [None])
        return table[codes], (text_for_formula(table)[codes] if text else None)
    dtype = series.dtype
    direct = (isinstance(dtype, np.dtype) and
              (dtype.kind in "biuf" if kind == NUMERIC else dtype.kind == "b"))
    if direct:
        x = series.to_numpy(dtype=np.float64, copy=True)
    elif (kind == BOOLEAN and str(dtype) == "boolean") or (
            kind == NUMERIC and pd.api.types.is_extension_array_dtype(dtype)
            and (pd.api.types.is_numeric_dtype(dtype) or str(dtype) == "boolean")):
        # nullable Int64/Float64/boolean (and Arrow-backed numbers): NA -> NaN; always a copy
        # (without NA pandas may hand out its own buffer, and the steps work in place on what
        # this returns)
        x = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    else:
        convert = to_float if kind == NUMERIC else to_bool
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        table = np.array([convert(u, col) for u in list(uniques)] + [math.nan], dtype=np.float64)
        x = table[codes]
    return finite(np.ascontiguousarray(x, dtype=np.float64)), None


def read_raw(raw: list, kind: str, col: str, text: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """`read_series` for the values of one column of JSON records (no pandas)."""
    if kind == CATEGORICAL:
        labels = object_array([canon(v) for v in raw])
        return labels, (text_for_formula(labels) if text else None)
    convert = to_float if kind == NUMERIC else to_bool
    return finite(np.array([convert(v, col) for v in raw], dtype=np.float64)), None
