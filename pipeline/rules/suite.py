"""ColumnRules -> the checks validation runs on every block (pipeline.validation runs them).

One `Rule` per check, in the order the report lists them: type, range, nullable, values, unique,
regex. range / nullable / values / regex become Great Expectations expectations; `type` is a
pandas check here (GE's type expectations judge a column's dtype as a whole, and quarantine needs
to know which rows are wrong); `unique` is the whole-dataset duplicate search of validation.

How this compiler reads values (serving and batch scoring read them differently, see
pipeline.rules.request and pipeline.rules.rows):
- a non-null value that is not a number breaks `range` (and `type: numeric`);
- the range is checked even when a value list is given;
- `values` compares as GE does (Python equality, so 1.0 and True match 1), except that text
  '0' / '1' matches a list of numbers (see validation._prepared_for_ge);
- `type: boolean` takes booleans, 0 / 1 and the words true / false (either capitalisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd

from pipeline.rules.model import ColumnRules


@dataclass(frozen=True)
class Rule:
    column: str
    rule: str           # type | range | nullable | values | unique | regex
    detail: str         # human text: "range [0, 100]"
    params: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.column}:{self.rule}"


def checks(rules: ColumnRules) -> Iterator[Rule]:
    c = rules.name
    if rules.kind:
        yield Rule(c, "type", rules.kind, {"type": rules.kind})
    if rules.has_range:
        low, high = rules.minimum, rules.maximum
        yield Rule(c, "range", f"[{_num(low, '-inf')}, {_num(high, 'inf')}]", {"min": low, "max": high})
    if not rules.nullable:
        yield Rule(c, "nullable", "not null")
    if rules.values is not None:
        shown = ", ".join(str(v) for v in rules.values[:8]) + (", ..." if len(rules.values) > 8 else "")
        yield Rule(c, "values", f"in {{{shown}}}", {"values": list(rules.values)})
    if rules.unique:
        yield Rule(c, "unique", "unique")
    if rules.regex:
        yield Rule(c, "regex", f"matches {rules.regex}", {"regex": rules.regex})


def _num(value: Any, unbounded: str) -> str:
    return unbounded if value is None else f"{value:g}"


def ge_expectation(gxe, rule: Rule):
    """The GE expectation of one check (`gxe`: great_expectations.expectations, imported by the
    caller in the worker), or None for the checks GE does not run."""
    c = rule.column
    if rule.rule == "range":
        return gxe.ExpectColumnValuesToBeBetween(column=c, min_value=rule.params["min"],
                                                 max_value=rule.params["max"])
    if rule.rule == "nullable":
        return gxe.ExpectColumnValuesToNotBeNull(column=c)
    if rule.rule == "values":
        return gxe.ExpectColumnValuesToBeInSet(column=c, value_set=rule.params["values"])
    if rule.rule == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(column=c, regex=rule.params["regex"])
    return None  # type: type_ok; unique: the duplicate search


def type_ok(col: pd.Series, kind: str) -> np.ndarray:
    """Per row: does the value fit `type: kind` (nulls always do; `nullable` is its own rule)."""
    present = col.notna().to_numpy()
    if kind in ("numeric", "integer"):
        if pd.api.types.is_bool_dtype(col):
            return ~present
        numbers = pd.to_numeric(col, errors="coerce")
        ok = numbers.notna().to_numpy() | ~present
        if kind == "integer":
            # as float64 numpy: Arrow-backed columns (Ray Data's pandas batches) have no `%`
            values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
            whole = np.where(np.isnan(values), 0.0, values) % 1 == 0
            ok &= ~present | whole
        return ok
    if kind == "boolean":
        return ~present | col.map(lambda v: isinstance(v, (bool, np.bool_)) or v in (0, 1, "true", "false",
                                                                                   "True", "False")).to_numpy()
    if kind == "datetime":
        return ~present | pd.to_datetime(col, errors="coerce").notna().to_numpy()
    return np.ones(len(col), dtype=bool)  # categorical / string: any value is a label
