"""FeaturePipeline: derived features and registered steps, fitted on the training split, applied
everywhere (see the package docstring for the order of work)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.features.build import plan
from pipeline.features.errors import FeatureError
from pipeline.features.steps import Step, count, registry
from pipeline.features.values import (
    CATEGORICAL,
    Indicator,
    fill,
    finite,
    normalise_kind,
    read_raw,
    read_series,
)
from pipeline.formula import Formula, FormulaError

FORMAT = "rayline.feature_pipeline"
FORMAT_VERSION = 1


class FeaturePipeline:
    """Build with `from_spec` (or `from_dict`/`load`), then `fit(train_df)`; see the package doc."""

    def __init__(self, *, input_columns: Sequence[str], column_kinds: Mapping[str, str],
                 derived: Sequence[Mapping[str, str]], steps: Sequence[Mapping[str, Any] | Step],
                 output_columns: Optional[Sequence[str]] = None):
        self._input_columns = list(input_columns)
        self._derived = [dict(d) for d in derived]
        self._steps = [Step.from_dict(s.to_dict() if isinstance(s, Step) else s) for s in steps]
        self._output_columns = list(output_columns) if output_columns is not None else None
        self._formulas: list[tuple[str, str, Formula]] = []   # (name, transformation, formula)
        for d in self._derived:
            try:
                self._formulas.append((d["name"], d.get("step"), Formula.parse(d["formula"])))
            except FormulaError as exc:
                raise FeatureError(f"derived feature {d['name']!r} (transformation "
                                   f"{d.get('step')!r}): {exc}", transformation=d.get("step")) from None
        derived_names = [d["name"] for d in self._derived]
        self._required = list(self._input_columns)
        for _, _, formula in self._formulas:
            for name in sorted(formula.names):
                if name not in derived_names and name not in self._required:
                    self._required.append(name)
        missing = [c for c in self._required if c not in column_kinds]
        if missing:
            raise FeatureError(f"column_kinds has no kind for column(s) {', '.join(missing)}")
        self._kinds = {c: normalise_kind(column_kinds[c], c) for c in self._required}
        self._text_columns = {name for _, _, f in self._formulas for name in f.names
                              if self._kinds.get(name) == CATEGORICAL}
        self._users = self._column_users()
        self._counter_keys = ("division_by_zero", *registry.counters())
        self.stats: dict[str, Any] = {}
        self.reset_stats()

    @classmethod
    def from_spec(cls, transformations: Iterable[Any], input_columns: Sequence[str],
                  column_kinds: Mapping[str, str]) -> "FeaturePipeline":
        """An unfitted pipeline. `transformations` are spec.Transformation objects (or dicts of
        the same shape); `input_columns` the raw feature columns in order; `column_kinds` the
        kind of every input column and of every column a formula reads. A FeatureError about
        one transformation names it in `.transformation` (and the column in `.column`)."""
        kinds, derived, steps = plan(transformations, input_columns, column_kinds)
        return cls(input_columns=list(input_columns), column_kinds=kinds, derived=derived,
                   steps=steps)

    # ------------------------------------------------------------------ questions

    @property
    def is_fitted(self) -> bool:
        return self._output_columns is not None and all(s.fitted is not None for s in self._steps)

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

    def known_categories(self) -> dict[str, set[str]]:
        """Per encoded column, the categories it was fitted on (the training values kept and
        those folded into `__other__`); empty before fit. A value outside them is unknown."""
        known: dict[str, set[str]] = {}
        for step in self._steps:
            for col, values in step.known_categories().items():
                known.setdefault(col, set()).update(values)
        return known

    def reset_stats(self) -> None:
        self.stats = {"rows": 0, "division_by_zero": {name: 0 for name, _, _ in self._formulas},
                      **{key: {} for key in registry.counters()}}
        for step in self._steps:
            for key in step.counts:
                self.stats.setdefault(key, {}).update({c: 0 for c in step.columns})

    # ------------------------------------------------------------------ fit / transform

    def fit(self, df: pd.DataFrame) -> "FeaturePipeline":
        """Fit every step on `df` (the training split) and nothing else; returns self, fitted.
        Refitting starts from the spec again: nothing of an earlier fit is kept, and a failed
        fit changes nothing."""
        if not isinstance(df, pd.DataFrame):
            raise FeatureError(f"fit needs a pandas DataFrame, got {type(df).__name__}")
        if len(df) == 0:
            raise FeatureError("cannot fit the feature pipeline on an empty frame")
        steps = [s.unfitted() for s in self._steps]
        values, texts = self._read_frame(df)
        layout = self._execute(steps, values, texts, len(df), small=False, counters=None, fit=True)
        if len(set(layout)) != len(layout):
            dupes = sorted({c for c in layout if layout.count(c) > 1})
            raise FeatureError(f"the pipeline would output column(s) {', '.join(dupes)} "
                               f"twice (a one-hot label clashes with another column name)")
        self._steps, self._output_columns = steps, layout
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
        counters = self._new_counters()
        state = self._execute(self._steps, values, texts, len(df), small=False, counters=counters,
                              fit=False)
        matrix = np.empty((len(df), len(self._output_columns)), dtype=np.float64, order="F")
        for j, name in enumerate(self._output_columns):
            fill(matrix, j, state[name])
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
        text_columns = self._text_columns
        for col in self._required:
            try:
                raw = [r[col] for r in records]
            except KeyError:
                bad = next(i for i, r in enumerate(records) if col not in r)
                raise FeatureError(f"record {bad} has no {col!r} (needed by "
                                   f"{self._users[col]})", column=col) from None
            except TypeError:
                bad = next(i for i, r in enumerate(records) if not isinstance(r, Mapping))
                raise FeatureError(f"record {bad} is a {type(records[bad]).__name__}, "
                                   f"not a JSON object") from None
            values[col], text = read_raw(raw, self._kinds[col], col, col in text_columns)
            if text is not None:
                texts[col] = text
        counters = self._new_counters()
        state = self._execute(self._steps, values, texts, n, small=True, counters=counters,
                              fit=False)
        out = np.empty((n, len(self._output_columns)), dtype=np.float64)
        for j, name in enumerate(self._output_columns):
            fill(out, j, state[name])
        self._merge(counters, n)
        return out

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "input_columns": list(self._input_columns),
            "column_kinds": dict(self._kinds),
            "derived": [dict(d) for d in self._derived],
            "steps": [s.to_dict() for s in self._steps],
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
            return cls(input_columns=d["input_columns"], column_kinds=d["column_kinds"],
                       derived=d["derived"], steps=list(d["steps"]),
                       output_columns=d.get("output_columns"))
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

    def describe(self) -> list[dict]:
        """Rows for a table: step, method, columns, params (fitted values, summarised)."""
        rows = [{"step": d["step"], "method": "derived", "columns": d["name"],
                 "params": d["formula"], "auto": False} for d in self._derived]
        rows += [{"step": s.name, "method": s.label, "columns": ", ".join(s.columns),
                  "params": s.describe(), "auto": bool(s.auto)} for s in self._steps]
        return rows

    # ------------------------------------------------------------------ internals

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise FeatureError("the feature pipeline is not fitted: call fit(train_df) first")

    def _column_users(self) -> dict[str, str]:
        users: dict[str, list[str]] = {c: [] for c in self._required}
        for name, step, formula in self._formulas:
            for c in formula.names:
                if c in users:
                    users[c].append(f"transformation {step!r} (derived {name})")
        for s in self._steps:
            for c in s.columns:
                if c in users:
                    users[c].append(f"transformation {s.name!r} ({s.method})")
        return {c: (", ".join(dict.fromkeys(u)) or "the model's input features")
                for c, u in users.items()}

    def _read_frame(self, df: pd.DataFrame) -> tuple[dict, dict]:
        missing = [c for c in self._required if c not in df.columns]
        if missing:
            raise FeatureError("; ".join(f"column {c!r} is missing from the data (needed by "
                                         f"{self._users[c]})" for c in missing),
                               column=missing[0] if len(missing) == 1 else None)
        values: dict[str, np.ndarray] = {}
        texts: dict[str, np.ndarray] = {}
        for col in self._required:
            series = df[col]
            if isinstance(series, pd.DataFrame):
                raise FeatureError(f"the data has more than one column named {col!r}", column=col)
            values[col], text = read_series(series, self._kinds[col], col, col in self._text_columns)
            if text is not None:
                texts[col] = text
        return values, texts

    def _execute(self, steps: list[Step], values: dict, texts: dict, n: int, *, small: bool,
                 counters: Optional[dict], fit: bool):
        """The one code path behind fit, transform and transform_records. Returns the state
        {name: float64 array} (or, when fitting `steps`, the output layout)."""
        state: dict[str, Any] = {c: values[c] for c in self._input_columns}
        layout = list(self._input_columns)
        if self._formulas:
            env = {c: texts.get(c, values[c]) for c in self._required}
            for name, step, formula in self._formulas:
                try:
                    with np.errstate(all="ignore"):
                        out, zeros = formula.evaluate({c: env[c] for c in formula.names})
                except FormulaError as exc:
                    raise FeatureError(f"derived feature {name!r} (transformation {step!r}): "
                                       f"{exc}", transformation=step) from None
                if out.shape != (n,):  # a constant formula gives a 0-d array
                    out = np.broadcast_to(out, (n,))
                out = finite(np.array(out, dtype=np.float64))  # a copy: never alias an input
                env[name] = out
                state[name] = out
                layout.append(name)
                if counters is not None:
                    count(counters, "division_by_zero", name, zeros)
        read_later = _read_later(steps) if fit else None
        with np.errstate(all="ignore"):
            for i, step in enumerate(steps):
                if fit:
                    step.set_fitted({c: step.fit_column(c, _dense(state[c])) for c in step.columns})
                if not step.applies:
                    continue
                for col in step.columns:
                    x = state.pop(col)
                    if fit:
                        names = step.output_names(col)
                        if read_later[i].isdisjoint([col, *names]):
                            # Fitting only needs the output layout from here on: applying the
                            # step (a dense one-hot block, a final imputation) would be thrown
                            # away.
                            if names != [col]:
                                at = layout.index(col)
                                layout[at:at + 1] = names
                            continue
                    if isinstance(x, Indicator):
                        x = x.dense()
                    result = step.apply(col, x, small, counters)
                    if isinstance(result, dict):  # the step replaced the column
                        state.update(result)
                        if fit:
                            at = layout.index(col)
                            layout[at:at + 1] = list(result)
                    else:
                        state[col] = result
        return layout if fit else state

    def _new_counters(self) -> dict:
        return {key: {} for key in self._counter_keys}

    def _merge(self, counters: dict, n: int) -> None:
        self.stats["rows"] += n
        for key, per in counters.items():
            bucket = self.stats.setdefault(key, {})
            for col, count_ in per.items():
                bucket[col] = bucket.get(col, 0) + int(count_)


def _dense(x):
    """A column a step reads: a one-hot output column (an input may carry the same name)
    becomes its float64 array."""
    return x.dense() if isinstance(x, Indicator) else x


def _read_later(steps: list[Step]) -> list[set]:
    """Per step, the columns some later step reads."""
    out: list[set] = []
    seen: set = set()
    for step in reversed(steps):
        out.append(set(seen))
        seen.update(step.columns)
    return out[::-1]
