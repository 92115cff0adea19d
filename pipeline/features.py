"""FeaturePipeline: the spec's `transformations`, fitted on the training split, applied everywhere.

Why this is hand-written instead of scikit-learn's ColumnTransformer/Pipeline:

* The fitted state must travel with every model (MLflow artifact, Ray Serve replica, batch job)
  as a plain, safe JSON value. A fitted ColumnTransformer is only persistable with pickle (or
  skops with an allow-list), i.e. loading it runs code; `to_dict()` here is data only, and two
  fitted pipelines are equal exactly when their dicts are equal.
* Serving transforms one JSON record per request. sklearn needs a DataFrame per call (~1 ms of
  pandas overhead before any work) and its encoders/scalers do their own dtype handling, so the
  single-record path and the batch path are not guaranteed to give the same bits. Here both paths
  convert their input into the same canonical numpy arrays (float64 for numbers, canonical
  strings for categories) and then run the very same numpy code, so `transform(df)` and
  `transform_records(records)` give bit-identical float64 output (tested with np.array_equal).
* Derived features use the project's safe formula language (pipeline.formula), which sklearn
  does not know about.

Order of work (fit and transform alike):
  1. read the raw columns: numbers -> float64 (None/NaN/inf -> NaN); booleans -> 0.0/1.0 (the
     implicit `auto_boolean` step); categories -> canonical strings (1, 1.0 and "1" are the same
     category; None/NaN/pd.NA are null);
  2. derived features, in spec order, evaluated on the raw columns (a formula may also read a
     derived feature defined before it); division by zero gives NaN and is counted;
  3. the spec's steps in their order (a column may go through several, e.g. impute then scale);
  4. `auto_one_hot`: every categorical input column no step encoded (at most
     AUTO_ONE_HOT_MAX_CATEGORIES categories, the rest -> `__other__`);
  5. `auto_impute`: every numeric output column gets the training median (0.0 if the column was
     all-null in training), so the output never holds NaN.

Method semantics (fit on the training split only; NaN is ignored when fitting and stays NaN until
an impute step or the final imputation):
  standard_scaler  (x - mean) / std, population std (ddof=0, as sklearn); std 0 -> 1
  min_max_scaler   (x - min) / (max - min); max == min -> divide by 1
  one_hot          one 0/1 column `col=value` per category: sorted distinct training values as
                   strings (or the `categories` given for the column). Null gets its own column
                   `col=__null__` only if the training data had nulls; otherwise a null row is
                   all-zero. Unknown values at transform time give an all-zero row and are
                   counted. With `max_categories: N` the N most frequent training values are kept
                   (ties by value) and the other training values go to `col=__other__`; unknown
                   values then also go to `__other__` (as sklearn's infrequent_if_exist) and are
                   still counted as unknown.
  ordinal          index in `categories[col]` if given, else in the sorted training values;
                   unknown -> -1 (counted); null -> NaN (so the final imputation fills it)
  impute           strategy mean | median | most_frequent | constant (fill_value). Categorical
                   columns (before encoding) take most_frequent or constant.
  log              log1p(x) for x >= 0; a negative x gives NaN (then the final median imputation)
                   and is counted in stats["negative_log_inputs"]
  clip             np.clip to lower/upper (either may be absent)

Infinite numbers (in the data or from a formula) are treated as null, so fitted values and the
output are always finite.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.formula import Formula, FormulaError

FORMAT = "rayline.feature_pipeline"
FORMAT_VERSION = 1
NULL_LABEL = "__null__"
OTHER_LABEL = "__other__"
AUTO_ONE_HOT_MAX_CATEGORIES = 100

NUMERIC, CATEGORICAL, BOOLEAN = "numeric", "categorical", "boolean"
_KIND_ALIASES = {
    "numeric": NUMERIC, "number": NUMERIC, "integer": NUMERIC, "int": NUMERIC, "float": NUMERIC,
    "categorical": CATEGORICAL, "category": CATEGORICAL, "string": CATEGORICAL, "str": CATEGORICAL,
    "text": CATEGORICAL, "object": CATEGORICAL,
    "boolean": BOOLEAN, "bool": BOOLEAN,
}
_NUMERIC_ONLY = ("standard_scaler", "min_max_scaler", "log", "clip")
_METHODS = ("standard_scaler", "min_max_scaler", "one_hot", "ordinal", "impute", "log", "clip",
            "boolean")
_TEXT_NULL = "\x00"  # how a null category reaches a formula (never equal to a real label)


class FeatureError(ValueError):
    """A feature pipeline that cannot be built, fitted or applied; the message names the column
    and the transformation involved."""


# --------------------------------------------------------------------------- scalar conversion
# These per-value functions are the single source of truth for both paths: the record path calls
# them on every value, the frame path on every distinct value (pd.factorize) and gathers.

def _is_null(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, (float, np.floating)):
        return v != v
    return False


def _canon(v: Any) -> Optional[str]:
    """The category label of a raw value: compared as strings, integral numbers without '.0'."""
    if type(v) is str:
        return v
    if _is_null(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isfinite(f) and f.is_integer():
            return str(int(f))
        return repr(f)
    return str(v)


def _to_float(v: Any, column: str) -> float:
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
            raise FeatureError(f"column {column!r} is numeric but holds {v!r}") from None
    if _is_null(v):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        raise FeatureError(f"column {column!r} is numeric but holds {v!r}") from None


_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def _to_bool(v: Any, column: str) -> float:
    if v is True or v is False:
        return 1.0 if v else 0.0
    if _is_null(v):
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
    raise FeatureError(f"column {column!r} is boolean but holds {v!r}")


# --------------------------------------------------------------------------- array helpers

def _finite(x: np.ndarray) -> np.ndarray:
    """x (owned, float64) with +-inf replaced by NaN, in place."""
    bad = ~np.isfinite(x)
    if bad.any():
        x[bad] = np.nan
    return x


def _object_array(items: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _null_mask(values: np.ndarray) -> np.ndarray:
    return np.equal(values, None)


def _lookup(values: np.ndarray, mapping: Mapping[str, int], null_code: int, unknown: int,
            small: bool) -> np.ndarray:
    """Category labels -> int codes (null -> null_code, not in mapping -> unknown)."""
    if small:
        get = mapping.get
        return np.fromiter((null_code if v is None else get(v, unknown) for v in values),
                           dtype=np.int64, count=len(values))
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.fromiter((mapping.get(u, unknown) for u in uniques), dtype=np.int64,
                        count=len(uniques))
    return np.append(table, np.int64(null_code))[codes]


def _labels_from_numbers(x: np.ndarray, small: bool) -> np.ndarray:
    """A numeric column that is about to be encoded: float64 -> canonical labels."""
    if small:
        return _object_array([_canon(v) for v in x.tolist()])
    codes, uniques = pd.factorize(x, use_na_sentinel=True)
    table = _object_array([_canon(u) for u in uniques.tolist()] + [None])
    return table[codes]


def _text_for_formula(values: np.ndarray) -> np.ndarray:
    return np.array([_TEXT_NULL if v is None else v for v in values], dtype=str)


def _summary(value: float) -> str:
    return f"{value:.6g}"


# --------------------------------------------------------------------------- the pipeline

class FeaturePipeline:
    """Build with `from_spec` (or `from_dict`/`load`), then `fit(train_df)`; see the module doc."""

    def __init__(self, *, input_columns: Sequence[str], column_kinds: Mapping[str, str],
                 derived: Sequence[Mapping[str, str]], steps: Sequence[Mapping[str, Any]],
                 output_columns: Optional[Sequence[str]] = None):
        self._input_columns = list(input_columns)
        self._derived = [dict(d) for d in derived]
        self._steps = [copy.deepcopy(dict(s)) for s in steps]
        self._output_columns = list(output_columns) if output_columns is not None else None
        self._formulas: list[tuple[str, Formula]] = []
        for d in self._derived:
            try:
                self._formulas.append((d["name"], Formula.parse(d["formula"])))
            except FormulaError as exc:
                raise FeatureError(f"derived feature {d['name']!r} (transformation "
                                   f"{d.get('step')!r}): {exc}") from None
        derived_names = [d["name"] for d in self._derived]
        self._required = list(self._input_columns)
        for _, formula in self._formulas:
            for name in sorted(formula.names):
                if name not in derived_names and name not in self._required:
                    self._required.append(name)
        missing = [c for c in self._required if c not in column_kinds]
        if missing:
            raise FeatureError(f"column_kinds has no kind for column(s) {', '.join(missing)}")
        self._kinds = {c: _normalise_kind(column_kinds[c], c) for c in self._required}
        self._text_columns = {name for _, f in self._formulas for name in f.names
                              if self._kinds.get(name) == CATEGORICAL}
        self._users = self._column_users()
        self._runtime: Optional[list] = None
        self.stats: dict[str, Any] = {}
        self.reset_stats()
        if self.is_fitted:
            self._compile()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_spec(cls, transformations: Iterable[Any], input_columns: Sequence[str],
                  column_kinds: Mapping[str, str]) -> "FeaturePipeline":
        """An unfitted pipeline. `transformations` are spec.Transformation objects (or dicts of
        the same shape); `input_columns` the raw feature columns in order; `column_kinds` the
        kind of every input column and of every column a formula reads."""
        from pipeline.spec import Transformation

        input_columns = list(input_columns)
        if len(set(input_columns)) != len(input_columns):
            raise FeatureError("input_columns lists a column twice")
        transformations = [t if isinstance(t, Transformation) else Transformation.model_validate(t)
                           for t in transformations]
        derived: list[dict] = []
        for t in transformations:
            for d in t.derived or []:
                if d.name in input_columns:
                    raise FeatureError(f"derived feature {d.name!r} (transformation {t.name!r}) "
                                       f"has the name of an input column")
                if any(x["name"] == d.name for x in derived):
                    raise FeatureError(f"derived feature {d.name!r} is defined twice")
                formula = Formula.parse(d.formula)
                known = set(column_kinds) | set(input_columns) | {x["name"] for x in derived}
                unknown = sorted(formula.names - known)
                if unknown:
                    raise FeatureError(
                        f"derived feature {d.name!r} (transformation {t.name!r}) reads "
                        f"{', '.join(map(repr, unknown))}: not an input column, an earlier derived "
                        f"feature or a column of known kind")
                derived.append({"step": t.name, "name": d.name, "formula": d.formula})

        for c in input_columns:
            if c not in column_kinds:
                raise FeatureError(f"column_kinds has no kind for input column {c!r}")
        derived_names = {d["name"] for d in derived}
        read = {n for d in derived for n in Formula.parse(d["formula"]).names} - derived_names
        kinds = {c: _normalise_kind(column_kinds[c], c) for c in [*input_columns, *sorted(read)]}

        # Track each column's kind through the steps, so mistakes surface before any data is read.
        state: dict[str, str] = {c: (CATEGORICAL if kinds[c] == CATEGORICAL else NUMERIC)
                                 for c in input_columns}
        state.update({d["name"]: NUMERIC for d in derived})
        encoded_by: dict[str, str] = {}
        steps: list[dict] = []
        booleans = [c for c in input_columns if kinds[c] == BOOLEAN]
        if booleans:
            steps.append(_step("auto_boolean", "boolean", booleans, {}, auto=True))
        for t in transformations:
            if t.derived is not None:
                continue
            method, columns = t.method, list(t.columns or [])
            if len(set(columns)) != len(columns):
                raise FeatureError(f"transformation {t.name!r} lists a column twice")
            where = f"transformation {t.name!r} ({method})"
            for col in columns:
                if col in encoded_by:
                    raise FeatureError(f"{where}: column {col!r} was already one-hot encoded by "
                                       f"transformation {encoded_by[col]!r}")
                if col not in state:
                    raise FeatureError(
                        f"{where}: column {col!r} is not an input column (it is missing from the "
                        f"data or excluded as target, id or by features) nor a derived feature")
                kind = state[col]
                if method in _NUMERIC_ONLY and kind == CATEGORICAL:
                    raise FeatureError(f"{where}: column {col!r} is categorical; encode it with "
                                       f"one_hot or ordinal first")
                if method == "impute" and kind == CATEGORICAL and t.strategy in ("mean", "median"):
                    raise FeatureError(f"{where}: column {col!r} is categorical; impute it with "
                                       f"strategy most_frequent or constant")
                if method == "impute" and kind == NUMERIC and t.strategy == "constant":
                    try:
                        float(t.fill_value)
                    except (TypeError, ValueError):
                        raise FeatureError(f"{where}: fill_value {t.fill_value!r} is not a number "
                                           f"but column {col!r} is numeric") from None
                if method == "one_hot":
                    encoded_by[col] = t.name
                    del state[col]
                elif method == "ordinal":
                    state[col] = NUMERIC
            options: dict[str, Any] = {}
            if method == "impute":
                options = {"strategy": t.strategy, "fill_value": t.fill_value}
            elif method == "clip":
                options = {"lower": t.lower, "upper": t.upper}
            elif method in ("one_hot", "ordinal"):
                cats = {}
                for col, values in (t.categories or {}).items():
                    if col not in columns:
                        raise FeatureError(f"{where}: categories given for {col!r}, which the "
                                           f"transformation does not encode")
                    labels = [_canon(v) for v in values]
                    if len(set(labels)) != len(labels) or None in labels:
                        raise FeatureError(f"{where}: categories for {col!r} repeat a value or "
                                           f"hold a null")
                    cats[col] = labels
                options = {"categories": cats}
                if method == "one_hot":
                    options["max_categories"] = t.max_categories
            steps.append(_step(t.name, method, columns, options))
        leftover = [c for c, k in state.items() if k == CATEGORICAL]
        if leftover:
            steps.append(_step("auto_one_hot", "one_hot", leftover,
                               {"categories": {}, "max_categories": AUTO_ONE_HOT_MAX_CATEGORIES},
                               auto=True))
            for c in leftover:
                del state[c]
        numeric = [c for c, k in state.items() if k == NUMERIC]
        if numeric:
            steps.append(_step("auto_impute", "impute", numeric,
                               {"strategy": "median", "fill_value": None}, auto=True))
        return cls(input_columns=input_columns, column_kinds=kinds, derived=derived, steps=steps)

    # ------------------------------------------------------------------ properties

    @property
    def is_fitted(self) -> bool:
        return self._output_columns is not None and all(s["fitted"] is not None
                                                         for s in self._steps)

    @property
    def output_columns(self) -> list[str]:
        self._check_fitted()
        return list(self._output_columns)

    @property
    def required_columns(self) -> list[str]:
        return list(self._required)

    @property
    def input_columns(self) -> list[str]:
        return list(self._input_columns)

    def reset_stats(self) -> None:
        self.stats = {
            "rows": 0,
            "unknown_categories": {c: 0 for s in self._steps if s["method"] in ("one_hot", "ordinal")
                                   for c in s["columns"]},
            "division_by_zero": {name: 0 for name, _ in self._formulas},
            "nulls_imputed": {c: 0 for s in self._steps if s["method"] == "impute"
                              for c in s["columns"]},
            "negative_log_inputs": {c: 0 for s in self._steps if s["method"] == "log"
                                    for c in s["columns"]},
        }

    # ------------------------------------------------------------------ fit / transform

    def fit(self, df: pd.DataFrame) -> "FeaturePipeline":
        """Fit every step on `df` (the training split) and nothing else; returns self, fitted.
        Refitting starts from the spec again: nothing of an earlier fit is kept."""
        if not isinstance(df, pd.DataFrame):
            raise FeatureError(f"fit needs a pandas DataFrame, got {type(df).__name__}")
        if len(df) == 0:
            raise FeatureError("cannot fit the feature pipeline on an empty frame")
        before = (copy.deepcopy(self._steps), self._output_columns, self._runtime)
        for step in self._steps:
            step["fitted"] = None
        self._output_columns = None
        self._runtime = None
        try:
            values, texts = self._read_frame(df)
            layout = self._execute(values, texts, len(df), small=False, counters=None, fit=True)
            if len(set(layout)) != len(layout):
                dupes = sorted({c for c in layout if layout.count(c) > 1})
                raise FeatureError(f"the pipeline would output column(s) {', '.join(dupes)} "
                                   f"twice (a one-hot label clashes with another column name)")
        except BaseException:
            self._steps, self._output_columns, self._runtime = before  # a failed fit changes nothing
            raise
        self._output_columns = layout
        self._compile()
        self.reset_stats()
        return self

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        """float64 columns `output_columns`, same index (and order) as df, no NaN."""
        self._check_fitted()
        if not isinstance(df, pd.DataFrame):
            raise FeatureError(f"transform needs a pandas DataFrame, got {type(df).__name__}")
        matrix = self._frame_matrix(df)
        return pd.DataFrame(matrix, index=df.index, columns=list(self._output_columns), copy=False)

    def transform_table(self, table):
        """`transform` for an Arrow table, Ray Data's own block format:
        `ds.map_batches(pipeline.transform_table, batch_format="pyarrow")`. The same float64
        values as `transform` on the batch Ray Data would hand over as pandas, as an Arrow table
        of `output_columns`; only the columns the pipeline reads are converted, and the output
        columns are handed to Arrow without another copy."""
        import pyarrow as pa

        self._check_fitted()
        if not isinstance(table, pa.Table):
            raise FeatureError(f"transform_table needs a pyarrow Table, got {type(table).__name__}")
        missing = [c for c in self._required if c not in table.column_names]
        if missing:
            self._read_frame(pd.DataFrame(columns=table.column_names))  # raises, naming them
        frame = table.select(self._required).to_pandas(types_mapper=pd.ArrowDtype)
        matrix = self._frame_matrix(frame)
        return pa.Table.from_arrays([pa.array(matrix[:, j]) for j in range(matrix.shape[1])],
                                    names=list(self._output_columns))

    def _frame_matrix(self, df: pd.DataFrame) -> np.ndarray:
        values, texts = self._read_frame(df)
        counters = _new_counters()
        state = self._execute(values, texts, len(df), small=False, counters=counters, fit=False)
        matrix = np.empty((len(df), len(self._output_columns)), dtype=np.float64, order="F")
        for j, name in enumerate(self._output_columns):
            _fill(matrix, j, state[name])
        self._merge(counters, len(df))
        return matrix

    def transform_records(self, records: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> np.ndarray:
        """JSON records (a list of dicts, or one dict) -> float64 array (n, len(output_columns)),
        bit-identical to `transform` on the same rows. No pandas on this path."""
        self._check_fitted()
        if isinstance(records, Mapping):
            records = [records]
        n = len(records)
        values: dict[str, np.ndarray] = {}
        texts: dict[str, np.ndarray] = {}
        for col in self._required:
            try:
                raw = [r[col] for r in records]
            except KeyError:
                bad = next(i for i, r in enumerate(records) if col not in r)
                raise FeatureError(f"record {bad} has no {col!r} (needed by "
                                   f"{self._users[col]})") from None
            except TypeError:
                bad = next(i for i, r in enumerate(records) if not isinstance(r, Mapping))
                raise FeatureError(f"record {bad} is a {type(records[bad]).__name__}, "
                                   f"not a JSON object") from None
            kind = self._kinds[col]
            if kind == CATEGORICAL:
                labels = _object_array([_canon(v) for v in raw])
                values[col] = labels
                if col in self._text_columns:
                    texts[col] = _text_for_formula(labels)
            else:
                convert = _to_float if kind == NUMERIC else _to_bool
                values[col] = _finite(np.array([convert(v, col) for v in raw], dtype=np.float64))
        counters = _new_counters()
        state = self._execute(values, texts, n, small=True, counters=counters, fit=False)
        out = np.empty((n, len(self._output_columns)), dtype=np.float64)
        for j, name in enumerate(self._output_columns):
            _fill(out, j, state[name])
        self._merge(counters, n)
        return out

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "input_columns": list(self._input_columns),
            "column_kinds": dict(self._kinds),
            "derived": copy.deepcopy(self._derived),
            "steps": copy.deepcopy(self._steps),
            "output_columns": None if self._output_columns is None else list(self._output_columns),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeaturePipeline":
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise FeatureError("not a feature pipeline state (format is not "
                               f"{FORMAT!r})")
        if d.get("version") != FORMAT_VERSION:
            raise FeatureError(f"feature pipeline state version {d.get('version')!r} is not "
                               f"supported (this code reads version {FORMAT_VERSION})")
        try:
            steps = list(d["steps"])
            for s in steps:
                if s["method"] not in _METHODS:
                    raise FeatureError(f"unknown method {s['method']!r} in step {s['name']!r}")
            return cls(input_columns=d["input_columns"], column_kinds=d["column_kinds"],
                       derived=d["derived"], steps=steps, output_columns=d.get("output_columns"))
        except (KeyError, TypeError) as exc:
            raise FeatureError(f"malformed feature pipeline state: {exc!r}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the state as JSON (atomically); returns the path."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeaturePipeline":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeaturePipeline):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable (fit) and compared by value

    def __reduce__(self):
        # Pickled (e.g. by Ray for map_batches) as its JSON state, never as live objects.
        return (FeaturePipeline.from_dict, (self.to_dict(),))

    def __repr__(self) -> str:
        state = f"{len(self._output_columns)} outputs" if self.is_fitted else "not fitted"
        return (f"FeaturePipeline({len(self._input_columns)} inputs, {len(self._derived)} derived, "
                f"{len(self._steps)} steps, {state})")

    # ------------------------------------------------------------------ describe

    def describe(self) -> list[dict]:
        """Rows for a table: step, method, columns, params (fitted values, summarised)."""
        rows = []
        for d in self._derived:
            rows.append({"step": d["step"], "method": "derived", "columns": d["name"],
                         "params": d["formula"], "auto": False})
        for s in self._steps:
            rows.append({"step": s["name"], "method": s["method"] + (
                f" ({s['options']['strategy']})" if s["method"] == "impute" else ""),
                "columns": ", ".join(s["columns"]), "params": _describe_step(s),
                "auto": bool(s["auto"])})
        return rows

    # ------------------------------------------------------------------ internals

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise FeatureError("the feature pipeline is not fitted: call fit(train_df) first")

    def _column_users(self) -> dict[str, str]:
        users: dict[str, list[str]] = {c: [] for c in self._required}
        for name, formula in self._formulas:
            step = next(d["step"] for d in self._derived if d["name"] == name)
            for c in formula.names:
                if c in users:
                    users[c].append(f"transformation {step!r} (derived {name})")
        for s in self._steps:
            for c in s["columns"]:
                if c in users:
                    users[c].append(f"transformation {s['name']!r} ({s['method']})")
        return {c: (", ".join(dict.fromkeys(u)) or "the model's input features")
                for c, u in users.items()}

    def _read_frame(self, df: pd.DataFrame) -> tuple[dict, dict]:
        missing = [c for c in self._required if c not in df.columns]
        if missing:
            raise FeatureError("; ".join(f"column {c!r} is missing from the data (needed by "
                                         f"{self._users[c]})" for c in missing))
        values: dict[str, np.ndarray] = {}
        texts: dict[str, np.ndarray] = {}
        for col in self._required:
            series = df[col]
            if isinstance(series, pd.DataFrame):
                raise FeatureError(f"the data has more than one column named {col!r}")
            kind = self._kinds[col]
            if kind == CATEGORICAL:
                codes, uniques = pd.factorize(series, use_na_sentinel=True)
                table = _object_array([_canon(u) for u in list(uniques)] + [None])
                values[col] = table[codes]
                if col in self._text_columns:
                    texts[col] = _text_for_formula(table)[codes]
                continue
            dtype = series.dtype
            direct = (isinstance(dtype, np.dtype) and
                      (dtype.kind in "biuf" if kind == NUMERIC else dtype.kind == "b"))
            if direct:
                x = series.to_numpy(dtype=np.float64, copy=True)
            elif (kind == BOOLEAN and str(dtype) == "boolean") or (
                    kind == NUMERIC and pd.api.types.is_extension_array_dtype(dtype)
                    and (pd.api.types.is_numeric_dtype(dtype) or str(dtype) == "boolean")):
                # nullable Int64/Float64/boolean (and Arrow-backed numbers): NA -> NaN; always
                # a copy (without NA pandas may hand out its own buffer, and the steps work in
                # place on what this returns)
                x = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
            else:
                convert = _to_float if kind == NUMERIC else _to_bool
                codes, uniques = pd.factorize(series, use_na_sentinel=True)
                table = np.array([convert(u, col) for u in list(uniques)] + [math.nan],
                                 dtype=np.float64)
                x = table[codes]
            values[col] = _finite(np.ascontiguousarray(x, dtype=np.float64))
        return values, texts

    def _execute(self, values: dict, texts: dict, n: int, *, small: bool,
                 counters: Optional[dict], fit: bool):
        """The one code path behind fit, transform and transform_records. Returns the state
        {name: float64 array} (or, when fitting, the output layout)."""
        state: dict[str, np.ndarray] = {c: values[c] for c in self._input_columns}
        layout = list(self._input_columns)
        if self._formulas:
            env = {c: texts.get(c, values[c]) for c in self._required}
            for name, formula in self._formulas:
                try:
                    with np.errstate(all="ignore"):
                        out, zeros = formula.evaluate({c: env[c] for c in formula.names})
                except FormulaError as exc:
                    step = next(d["step"] for d in self._derived if d["name"] == name)
                    raise FeatureError(f"derived feature {name!r} (transformation {step!r}): "
                                       f"{exc}") from None
                if out.shape != (n,):  # a constant formula gives a 0-d array
                    out = np.broadcast_to(out, (n,))
                out = _finite(np.array(out, dtype=np.float64))  # a copy: never alias an input
                env[name] = out
                state[name] = out
                layout.append(name)
                if counters is not None:
                    _count(counters, "division_by_zero", name, zeros)
        runtime = self._runtime
        read_later = self._read_later() if fit else None
        with np.errstate(all="ignore"):
            for i, step in enumerate(self._steps):
                method = step["method"]
                if method == "boolean":  # applied while reading the raw values
                    if fit:
                        step["fitted"] = {c: {} for c in step["columns"]}
                    continue
                if fit:
                    step["fitted"] = {c: _fit_column(method, step["options"], c, state[c], small)
                                      for c in step["columns"]}
                    compiled = _compile_step(step)
                else:
                    compiled = runtime[i]
                for col in step["columns"]:
                    x = state.pop(col)
                    names = compiled[col][3] if method == "one_hot" else [col]
                    if fit and read_later[i].isdisjoint([col, *names]):
                        # Fitting only needs the output layout from here on: applying the
                        # step (a dense one-hot block, a final imputation) would be thrown away.
                        if method == "one_hot":
                            at = layout.index(col)
                            layout[at:at + 1] = list(names)
                        continue
                    if isinstance(x, _Indicator):
                        x = x.dense()
                    result = _apply_column(method, step, compiled, col, x, small, counters)
                    if isinstance(result, dict):  # one_hot
                        state.update(result)
                        at = layout.index(col)
                        layout[at:at + 1] = list(result)
                    else:
                        state[col] = result
        return layout if fit else state

    def _read_later(self) -> list[set]:
        """Per step, the columns some later step reads."""
        out: list[set] = []
        seen: set = set()
        for step in reversed(self._steps):
            out.append(set(seen))
            seen.update(step["columns"])
        return out[::-1]

    def _compile(self) -> None:
        self._runtime = [_compile_step(s) for s in self._steps]

    def _merge(self, counters: dict, n: int) -> None:
        self.stats["rows"] += n
        for key, per in counters.items():
            bucket = self.stats.setdefault(key, {})
            for col, count in per.items():
                bucket[col] = bucket.get(col, 0) + int(count)


# --------------------------------------------------------------------------- steps

def _step(name: str, method: str, columns: list[str], options: dict, auto: bool = False) -> dict:
    return {"name": name, "method": method, "columns": list(columns), "options": options,
            "auto": auto, "fitted": None}


def _normalise_kind(kind: Any, column: str) -> str:
    normal = _KIND_ALIASES.get(str(kind).lower()) if kind is not None else None
    if normal is None:
        raise FeatureError(f"column {column!r} has kind {kind!r}; a feature column is numeric, "
                           f"categorical or boolean (derive a number from dates, or exclude them)")
    return normal


def _new_counters() -> dict:
    return {"unknown_categories": {}, "division_by_zero": {}, "nulls_imputed": {},
            "negative_log_inputs": {}}


def _count(counters: dict, key: str, column: str, n: int) -> None:
    bucket = counters[key]
    bucket[column] = bucket.get(column, 0) + int(n)


def _fit_column(method: str, options: dict, col: str, x: np.ndarray, small: bool) -> dict:
    if method in ("log", "clip"):
        return {}
    if x.dtype == object:  # still categorical labels
        labels = x
        present = labels[~_null_mask(labels)]
        counts = pd.Series(present, dtype=object).value_counts(sort=False)
        counts = {str(k): int(v) for k, v in counts.items()}
        if method == "one_hot":
            return _fit_one_hot(options, col, counts, has_null=len(present) < len(labels))
        if method == "ordinal":
            given = options["categories"].get(col)
            return {"categories": list(given) if given is not None else sorted(counts)}
        if method == "impute":
            if options["strategy"] == "constant":
                return {"value": _canon(options["fill_value"])}
            if not counts:
                return {"value": None}
            top = max(counts.values())
            return {"value": min(k for k, v in counts.items() if v == top)}
        raise AssertionError(method)
    valid = x[~np.isnan(x)]
    if method == "standard_scaler":
        if valid.size == 0:
            return {"mean": 0.0, "std": 1.0}
        std = float(np.std(valid))
        return {"mean": float(np.mean(valid)), "std": std if std > 0 and math.isfinite(std) else 1.0}
    if method == "min_max_scaler":
        if valid.size == 0:
            return {"min": 0.0, "max": 1.0}
        return {"min": float(valid.min()), "max": float(valid.max())}
    if method == "impute":
        strategy = options["strategy"]
        if strategy == "constant":
            return {"value": float(options["fill_value"])}
        if valid.size == 0:
            return {"value": 0.0}
        if strategy == "mean":
            return {"value": float(np.mean(valid))}
        if strategy == "median":
            return {"value": float(np.median(valid))}
        uniques, counts = np.unique(valid, return_counts=True)
        return {"value": float(uniques[int(np.argmax(counts))])}
    if method in ("one_hot", "ordinal"):
        return _fit_column(method, options, col, _labels_from_numbers(x, small=False), small)
    raise AssertionError(method)


def _fit_one_hot(options: dict, col: str, counts: dict[str, int], has_null: bool) -> dict:
    given = options["categories"].get(col)
    if given is not None:
        return {"categories": list(given), "null": has_null, "other": []}
    limit = options.get("max_categories")
    categories = sorted(counts)
    other: list[str] = []
    if limit is not None and len(categories) > limit:
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        categories = sorted(k for k, _ in ranked[:limit])
        other = sorted(k for k, _ in ranked[limit:])
    return {"categories": categories, "null": has_null, "other": other}


def _one_hot_names(col: str, fitted: dict) -> list[str]:
    names = [f"{col}={c}" for c in fitted["categories"]]
    if fitted["null"]:
        names.append(f"{col}={NULL_LABEL}")
    if fitted["other"]:
        names.append(f"{col}={OTHER_LABEL}")
    return names


def _compile_step(step: dict) -> dict:
    """Per-column lookup tables built once from the fitted state (fast single-record path)."""
    compiled = {}
    if step["method"] == "one_hot":
        for col, f in step["fitted"].items():
            cats = f["categories"]
            mapping = {c: i for i, c in enumerate(cats)}
            k = len(cats)
            null_code = -2
            if f["null"]:
                null_code, k = k, k + 1
            unknown = -1
            if f["other"]:
                unknown, k = k, k + 1
                for c in f["other"]:
                    mapping[c] = unknown
            compiled[col] = (mapping, null_code, unknown, _one_hot_names(col, f))
    elif step["method"] == "ordinal":
        for col, f in step["fitted"].items():
            compiled[col] = {c: i for i, c in enumerate(f["categories"])}
    return compiled


_UNKNOWN = -3  # lookup marker: a value the encoder did not see in training


class _Indicator:
    """One one-hot output column, kept as (codes, j) until it is written into the output matrix
    (a dense float64 array per category would be made only to be copied there)."""

    __slots__ = ("codes", "j")

    def __init__(self, codes: np.ndarray, j: int):
        self.codes, self.j = codes, j

    def dense(self) -> np.ndarray:
        return (self.codes == self.j).astype(np.float64)


def _fill(matrix: np.ndarray, j: int, column) -> None:
    if isinstance(column, _Indicator):
        matrix[:, j] = column.codes == column.j
    else:
        matrix[:, j] = column


def _apply_column(method: str, step: dict, compiled: dict, col: str, x: np.ndarray, small: bool,
                  counters: Optional[dict]):
    # Numeric arrays reaching a step belong to this pipeline run (read fresh from the input,
    # or a step's own result), so numeric steps work in place: same bits, no new arrays.
    fitted = step["fitted"][col]
    if method == "standard_scaler":
        np.subtract(x, fitted["mean"], out=x)
        return np.divide(x, fitted["std"], out=x)
    if method == "min_max_scaler":
        span = fitted["max"] - fitted["min"]
        np.subtract(x, fitted["min"], out=x)
        return np.divide(x, span if span > 0 else 1.0, out=x)
    if method == "log":
        negative = x < 0
        if counters is not None:
            _count(counters, "negative_log_inputs", col, np.count_nonzero(negative))
        return np.log1p(np.where(negative, np.nan, x))
    if method == "clip":
        lower, upper = step["options"]["lower"], step["options"]["upper"]
        if lower is not None:
            x = np.maximum(x, float(lower))
        if upper is not None:
            x = np.minimum(x, float(upper))
        return x
    if method == "impute":
        value = fitted["value"]
        if x.dtype == object:
            if value is None:  # all-null in training: nothing to fill with
                filled = 0
            else:
                missing = _null_mask(x)
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
            _count(counters, "nulls_imputed", col, filled)
        return x
    labels = x if x.dtype == object else _labels_from_numbers(x, small)
    if method == "one_hot":
        mapping, null_code, unknown, names = compiled[col]
        codes = _lookup(labels, mapping, null_code, _UNKNOWN, small)
        is_unknown = codes == _UNKNOWN
        if counters is not None:
            _count(counters, "unknown_categories", col, np.count_nonzero(is_unknown))
        codes[is_unknown] = unknown
        return {name: _Indicator(codes, j) for j, name in enumerate(names)}
    if method == "ordinal":
        codes = _lookup(labels, compiled[col], -2, _UNKNOWN, small)
        is_unknown = codes == _UNKNOWN
        if counters is not None:
            _count(counters, "unknown_categories", col, np.count_nonzero(is_unknown))
        out = codes.astype(np.float64)
        out[is_unknown] = -1.0
        out[codes == -2] = np.nan
        return out
    raise AssertionError(method)


def _describe_step(step: dict) -> str:
    method, fitted, options = step["method"], step["fitted"], step["options"]
    if method == "boolean":
        return "True -> 1.0, False -> 0.0"
    if method == "clip":
        return f"lower={options['lower']}, upper={options['upper']}"
    if method == "log":
        return "log1p(x); x < 0 -> null"
    if fitted is None:
        extra = ""
        if method == "impute" and options.get("strategy") == "constant":
            extra = f"fill_value={options['fill_value']!r}; "
        return extra + "not fitted"
    parts = []
    for col, f in fitted.items():
        if method == "standard_scaler":
            parts.append(f"{col}: mean={_summary(f['mean'])} std={_summary(f['std'])}")
        elif method == "min_max_scaler":
            parts.append(f"{col}: min={_summary(f['min'])} max={_summary(f['max'])}")
        elif method == "impute":
            value = f["value"]
            shown = _summary(value) if isinstance(value, float) else repr(value)
            parts.append(f"{col}: fill={shown}")
        elif method in ("one_hot", "ordinal"):
            cats = f["categories"]
            shown = ", ".join(cats[:5]) + (f", … (+{len(cats) - 5})" if len(cats) > 5 else "")
            text = f"{col}: {len(cats)} categories [{shown}]"
            if f.get("null"):
                text += " + null"
            if f.get("other"):
                text += f" + {OTHER_LABEL} ({len(f['other'])} values)"
            parts.append(text)
    return "; ".join(parts)
