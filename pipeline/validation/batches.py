"""One batch: the Great Expectations suite and the type checks compiled from the column rules,
run on a pandas or Arrow batch in a Ray worker, turned into one reasons string per row."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from pipeline.rules import ColumnRules
from pipeline.rules.suite import Rule, checks, ge_expectation, type_ok
from pipeline.spec import Expectations
from pipeline.validation.report import REASONS


def rules_for(expectations: Expectations) -> list[Rule]:
    return [rule for col in expectations.columns for rule in checks(ColumnRules.from_expectation(col))]


_SUITES: dict[str, Any] = {}


# COMPLETE: every failing row's index comes back. The index query (a string listing those
# indices again) is not needed.
_RESULT_FORMAT = {"result_format": "COMPLETE", "return_unexpected_index_query": False}


def _ge_validation(rules: list[Rule]):
    """(batch definition, suite): one ephemeral GE context and suite per worker process, built on
    first use."""
    key = json.dumps([asdict(r) for r in rules], sort_keys=True, default=str)
    if key in _SUITES:
        return _SUITES[key]
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (ctx.data_sources.add_pandas("rayline").add_dataframe_asset("batch")
                 .add_batch_definition_whole_dataframe("whole"))
    suite = ctx.suites.add(gx.ExpectationSuite(name="rayline"))
    for rule in rules:
        expectation = ge_expectation(gxe, rule)
        if expectation is not None:
            expectation.meta = {"rayline_rule": rule.key}
            suite.add_expectation(expectation)
    _SUITES[key] = (batch_def, suite)
    return _SUITES[key]


def _run_suite(rules: list[Rule], frame: pd.DataFrame):
    """The suite's result on one frame: what ValidationDefinition.run does, without storing the
    result in the context (and without building the batch twice, as Batch.validate does: GE
    fingerprints every batch by hashing all of its values)."""
    from great_expectations.validator.v1_validator import Validator

    batch_def, suite = _ge_validation(rules)
    validator = Validator(batch_definition=batch_def, result_format=_RESULT_FORMAT,
                          batch_parameters={"dataframe": frame})
    return validator.validate_expectation_suite(suite)


def flag_batch(batch: pd.DataFrame, rules: list[Rule],
               duplicates: dict[str, list] | None = None) -> pd.DataFrame:
    """The batch with a REASONS column: ';'-joined rule keys each row broke ('' = passed).

    `duplicates` holds, per `unique` column, the values seen more than once in the whole
    dataset (found beforehand over the whole dataset: uniqueness is not a per-batch property,
    so GE's per-batch unique expectation would miss duplicates across blocks)."""
    out = batch.reset_index(drop=True)  # a copy: the caller's frame is left alone
    out[REASONS] = batch_reasons(out, rules, duplicates)
    return out


def _flag_table(table, rules: list[Rule], duplicates: dict[str, list] | None = None):
    """flag_batch on an Arrow block (Ray Data's own format): only the columns the rules read are
    converted to pandas, and the block's other columns go through untouched (no copy)."""
    import pyarrow as pa

    needed = list(dict.fromkeys(r.column for r in rules))
    frame = table.select(needed).to_pandas(types_mapper=pd.ArrowDtype)  # as Ray Data's pandas batches
    reasons = batch_reasons(frame, rules, duplicates)
    if REASONS in table.column_names:
        table = table.drop_columns([REASONS])
    return table.append_column(REASONS, pa.array(reasons, type=pa.string()))


def batch_reasons(frame: pd.DataFrame, rules: list[Rule],
                  duplicates: dict[str, list] | None = None) -> np.ndarray:
    """One string per row of `frame` (any index): ';'-joined keys of the rules it broke."""
    n = len(frame)
    found: list[tuple[str, np.ndarray]] = []  # (rule key, row positions) in reason order
    for column, values in (duplicates or {}).items():
        if values and n:
            found.append((f"{column}:unique", np.flatnonzero(frame[column].isin(values).to_numpy())))
    if n:
        for rule in rules:
            if rule.rule == "type":
                found.append((rule.key, np.flatnonzero(~type_ok(frame[rule.column], rule.params["type"]))))
        ge_rules = [r for r in rules if r.rule not in ("type", "unique")]
        if ge_rules:
            checked, unreadable = _prepared_for_ge(frame, ge_rules)
            found.extend(unreadable.items())
            result = _run_suite(rules, checked)
            for res in result.results:
                _raise_if_ge_failed(res)
                if res.success:
                    continue
                key = res.expectation_config.meta["rayline_rule"]
                found.append((key, np.asarray(res.result.get("unexpected_index_list") or [],
                                              dtype=np.int64)))
    return _join_reasons(n, found)


def _join_reasons(n: int, found: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Rows with no reason get '' (most rows: no per-row Python work); the others their keys,
    ';'-joined in the order they were found."""
    out = np.full(n, "", dtype=object)
    per_row: dict[int, list[str]] = {}
    for key, rows in found:
        for i in rows.tolist():
            per_row.setdefault(i, []).append(key)
    for i, keys in per_row.items():
        out[i] = ";".join(keys)
    return out


def _raise_if_ge_failed(res) -> None:
    """GE 1.x keeps an expectation's own crash inside exception_info (flat, or one entry per
    metric); a crashed expectation must not read as 'no bad rows'."""
    info = res.exception_info or {}
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in entries:
        if entry.get("raised_exception"):
            raise RuntimeError(f"Great Expectations could not run {res.expectation_config.type} on "
                               f"column {res.expectation_config.kwargs.get('column')}: "
                               f"{entry.get('exception_message')}")


def _prepared_for_ge(frame: pd.DataFrame, rules: list[Rule]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The frame as GE should see it, and the rows that break a rule before GE looks.

    - Only the columns the rules read, with a positional index: GE filters the whole frame it is
      given once or twice per expectation, so every other column would be copied for nothing.
    - `range` needs numbers: a text column is converted, and a value that is not a number
      breaks the range rule itself (GE would raise on mixed types and report nothing). Numbers
      that are not numpy int64/float64 (Arrow-backed columns as Ray Data hands them over,
      nullable Int64, float32) become float64 with NaN for null: GE compares only those two
      dtypes vectorised, anything else one Python call per value.
    - `values: [0, 1]` must match a column read as 0/1 ints and as '0'/'1' strings alike.
    """
    columns = list(dict.fromkeys(r.column for r in rules))
    out = pd.DataFrame({c: frame[c].to_numpy(copy=False) if isinstance(frame[c].dtype, np.dtype)
                        else frame[c].array for c in columns}, index=pd.RangeIndex(len(frame)))
    unreadable: dict[str, np.ndarray] = {}
    for rule in rules:
        col = out[rule.column]
        if rule.rule == "range":
            if not pd.api.types.is_numeric_dtype(col):
                numbers = pd.to_numeric(col, errors="coerce")
                bad = col.notna().to_numpy() & numbers.isna().to_numpy()
                unreadable[rule.key] = np.flatnonzero(bad)
                col = numbers
            if not pd.api.types.is_bool_dtype(col) and col.dtype not in (np.int64, np.float64):
                col = pd.Series(col.to_numpy(dtype=np.float64, na_value=np.nan), index=out.index)
            out[rule.column] = col
        elif rule.rule == "values" and (col.dtype == object or pd.api.types.is_string_dtype(col)):
            wanted = rule.params["values"]
            if any(not isinstance(v, str) for v in wanted):
                lookup = {str(v): v for v in wanted}
                out[rule.column] = col.astype(object).map(
                    lambda v: v if _is_null(v) else lookup.get(str(v), v))
    for name in columns:
        out[name] = _cheap_for_ge(out[name])
    return out, unreadable


def _cheap_for_ge(col: pd.Series) -> pd.Series:
    """The same values in a dtype GE's pandas engine filters fast (it takes every column of the
    frame by a boolean mask once or twice per expectation): text -> categorical (integer codes
    instead of strings), Arrow-backed numbers -> numpy where that is exact (floats, and integers
    without nulls). Anything else is left as it is."""
    dtype = col.dtype
    if isinstance(dtype, pd.StringDtype):
        return col.astype("category")
    if not isinstance(dtype, pd.ArrowDtype):
        return col
    import pyarrow as pa

    kind = dtype.pyarrow_dtype
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return col.astype("category")
    if pa.types.is_floating(kind):
        return pd.Series(col.to_numpy(dtype=np.float64, na_value=np.nan), index=col.index)
    if pa.types.is_integer(kind) and not col.hasnans:
        return pd.Series(col.to_numpy(), index=col.index)
    return col


def _is_null(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
