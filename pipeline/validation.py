"""The spec's expectations as Great Expectations suites, run on Ray Data batches.

Each batch is validated by GE (COMPLETE result format, so every failing row index comes back);
we turn GE's per-expectation index lists into one reasons column per row. Rows with no reason
pass; the rest are the bad rows that `on_failure` decides about. The report (per rule: rows
checked, rows failed, a sample of bad values with their id) is built from those reasons, so the
counts always satisfy rows in = passed + bad.

The checks themselves (one `Rule` each, the GE expectation it becomes, the pandas type check)
are compiled from the column's input rules in pipeline.rules.suite; this module runs them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd

from pipeline.errors import RaylineError
from pipeline.rules import ColumnRules
from pipeline.rules.suite import Rule, checks, ge_expectation, type_ok
from pipeline.spec import Expectations

if TYPE_CHECKING:
    from pipeline.spec import Origin

REASONS = "_rayline_reasons"
SAMPLE_SIZE = 20


class ValidationFailed(RaylineError, RuntimeError):
    """The data broke the spec's expectations beyond what on_failure allows. `problems` are
    the report's failure lines (per rule: how many rows, examples with their ids)."""

    title = "data validation failed"

    def __init__(self, report: "ValidationReport", message: str, bad_rows: pd.DataFrame | None = None):
        self.report = report
        self.bad_rows = bad_rows if bad_rows is not None else pd.DataFrame(columns=[REASONS])
        self.message = message
        super().__init__(report.failure_lines())

    def __str__(self) -> str:
        return self.message

    @property
    def headline(self) -> str:
        """The first line of the message: what failed, without the per-rule lines."""
        return self.message.splitlines()[0].rstrip(":")


@dataclass
class RuleResult:
    column: str
    rule: str
    detail: str
    checked: int
    failed: int
    samples: list[dict] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.failed == 0


@dataclass
class ValidationReport:
    rows: int
    bad_rows: int
    results: list[RuleResult]
    table_failures: list[str] = field(default_factory=list)

    @property
    def passed_rows(self) -> int:
        return self.rows - self.bad_rows

    @property
    def success(self) -> bool:
        return self.bad_rows == 0 and not self.table_failures

    @property
    def bad_fraction(self) -> float:
        return self.bad_rows / self.rows if self.rows else 0.0

    def failure_lines(self) -> list[str]:
        lines = list(self.table_failures)
        for r in self.results:
            if r.failed:
                example = ", ".join(_show_sample(s) for s in r.samples[:3])
                detail = f" ({r.detail})" if r.detail != r.rule else ""
                lines.append(f"column {r.column}: rule {r.rule}{detail} failed on {r.failed} of "
                             f"{r.checked} rows" + (f"; e.g. {example}" if example else ""))
        return lines

    def to_dict(self) -> dict:
        return {"rows": self.rows, "passed_rows": self.passed_rows, "bad_rows": self.bad_rows,
                "success": self.success, "table_failures": self.table_failures,
                "results": [asdict(r) | {"success": r.success} for r in self.results]}

    def to_html(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr class='{'ok' if r.success else 'bad'}'><td>{escape(r.column)}</td><td>{escape(r.rule)}</td>"
            f"<td>{escape(r.detail)}</td><td>{r.checked}</td><td>{r.failed}</td>"
            f"<td>{escape(', '.join(_show_sample(x) for x in r.samples[:5]))}</td></tr>"
            for r in self.results)
        table = "".join(f"<li>{escape(t)}</li>" for t in self.table_failures)
        return ("<!doctype html><meta charset='utf-8'><title>Validation report</title>"
                "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
                ".bad td{background:#fde8e8}</style>"
                f"<h1>Validation report</h1><p>{self.rows} rows: {self.passed_rows} passed, "
                f"{self.bad_rows} failed.</p>" + (f"<ul>{table}</ul>" if table else "")
                + "<table><tr><th>column</th><th>rule</th><th>detail</th><th>checked</th>"
                  f"<th>failed</th><th>examples</th></tr>{rows}</table>")

    def to_markdown(self) -> str:
        out = ["# Validation report", "",
               f"{self.rows} rows: {self.passed_rows} passed, {self.bad_rows} failed.", ""]
        out += [f"- table: {t}" for t in self.table_failures]
        out += ["| column | rule | detail | checked | failed |", "|---|---|---|---|---|"]
        out += [f"| {r.column} | {r.rule} | {r.detail} | {r.checked} | {r.failed} |" for r in self.results]
        return "\n".join(out) + "\n"


def _show_sample(sample: dict) -> str:
    ident = sample.get("id")
    return f"{ident}: {sample['value']!r}" if ident is not None else repr(sample["value"])


def rules_for(expectations: Expectations) -> list[Rule]:
    return [rule for col in expectations.columns for rule in checks(ColumnRules.from_expectation(col))]


# ------------------------------------------------------------------ one batch (runs in Ray workers)

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


# ------------------------------------------------------------------ the whole dataset

def report_from_bad_rows(rules: list[Rule], total_rows: int, bad: pd.DataFrame,
                         id_column: str | None, table_failures: list[str]) -> ValidationReport:
    by_key: dict[str, RuleResult] = {
        r.key: RuleResult(r.column, r.rule, r.detail, checked=total_rows, failed=0) for r in rules}
    # Count from the reasons strings alone; only the few sampled rows become row objects.
    sampled: dict[str, list[int]] = {key: [] for key in by_key}
    for i, text in enumerate(bad[REASONS].tolist() if len(bad) else []):
        for key in filter(None, text.split(";")):
            by_key[key].failed += 1
            if len(sampled[key]) < SAMPLE_SIZE:
                sampled[key].append(i)
    wanted = sorted({i for rows in sampled.values() for i in rows})
    rows = dict(zip(wanted, (row for _, row in bad.iloc[wanted].iterrows()))) if wanted else {}
    for key, positions in sampled.items():
        result = by_key[key]
        for i in positions:
            row = rows[i]
            sample = {"value": _plain(row[result.column])}
            if id_column and id_column in row:
                sample["id"] = _plain(row[id_column])
            result.samples.append(sample)
    return ValidationReport(rows=total_rows, bad_rows=len(bad), results=list(by_key.values()),
                            table_failures=table_failures)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def table_checks(expectations: Expectations, row_count: int, columns: list[str],
                 where) -> list[str]:
    """Row-count bounds and missing columns: failures of the table as a whole (never quarantined)."""
    failures = []
    for i, col in enumerate(expectations.columns):
        if col.column not in columns:
            failures.append(f"{where('expectations', 'columns', i, 'column')}: column {col.column} "
                            f"is not in the data (columns: {', '.join(columns)})")
    if expectations.min_rows is not None and row_count < expectations.min_rows:
        failures.append(f"table: {row_count} rows, below min_rows {expectations.min_rows}")
    if expectations.max_rows is not None and row_count > expectations.max_rows:
        failures.append(f"table: {row_count} rows, above max_rows {expectations.max_rows}")
    return failures


_COUNT_TASK = None


def duplicate_values(ds, column: str) -> list:
    """Values of `column` that occur more than once in the whole dataset (nulls aside).

    Each block's values are counted where the block is, reading only `column`, and the driver
    adds the counts up (a Ray Data groupby did the same with a full shuffle, several times
    slower). A materialised dataset gets one small Ray task per block; a lazy one is streamed
    (the read only loads `column`), so nothing else of it is held in memory."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from ray.data.dataset import MaterializedDataset

    if isinstance(ds, MaterializedDataset):
        import ray

        global _COUNT_TASK
        if _COUNT_TASK is None:
            _COUNT_TASK = ray.remote(_block_value_counts)
        parts = ray.get([_COUNT_TASK.remote(block, column) for block in ds.to_arrow_refs()])
    else:
        counted = ds.select_columns([column]).map_batches(
            _block_value_counts, fn_kwargs={"column": column}, batch_format="pyarrow",
            batch_size=None)
        parts = list(counted.iter_batches(batch_format="pyarrow", batch_size=None))
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return []
    table = pa.concat_tables(parts, promote_options="permissive")
    # Sorted, a value is repeated when a block saw it twice or its neighbour equals it. (A hash
    # group-by of 10M distinct ids needs about three times the memory of this.)
    order = pc.sort_indices(table["value"])
    values = pc.take(table["value"], order).combine_chunks()
    counts = pc.take(table["count"], order).combine_chunks()
    del table, order
    repeated = pc.greater(counts, 1)
    if len(values) > 1:
        same = pc.fill_null(pc.equal(values[1:], values[:-1]), False)
        after = pa.concat_arrays([pa.array([False]), same])    # equals the one before it
        before = pa.concat_arrays([same, pa.array([False])])   # equals the one after it
        repeated = pc.or_(pc.or_(repeated, after), before)
    dupes = pc.unique(values.filter(repeated)).to_pylist()
    return [v for v in dupes if not _is_null(v)]


def _block_value_counts(block, column: str):
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = pc.value_counts(block.column(column))
    return pa.table({"value": counts.field("values"), "count": counts.field("counts")})


def flag_dataset(ds, expectations: Expectations):
    """(the rules that apply to ds's columns, ds with a REASONS column per row, lazily).

    Nothing is materialised but the values of `unique` columns seen more than once (found first,
    over the whole dataset); the flagged rows stream, so a caller that cannot hold the data can
    write or consume them batch by batch. Each block is checked by the GE suite in a Ray worker,
    Arrow in and Arrow out: only the columns the rules read become pandas, the rest of the block
    passes through untouched."""
    columns = list(ds.schema().names)
    rules = [r for r in rules_for(expectations) if r.column in columns]
    if not rules:
        return rules, ds.map_batches(_no_reasons, batch_format="pyarrow", batch_size=None)
    duplicates = {r.column: duplicate_values(ds, r.column) for r in rules if r.rule == "unique"}
    return rules, ds.map_batches(_flag_table, fn_kwargs={"rules": rules, "duplicates": duplicates},
                                 batch_format="pyarrow", batch_size=None)


def _no_reasons(table):
    import pyarrow as pa

    return table.append_column(REASONS, pa.array([""] * table.num_rows, type=pa.string()))


def validate_dataset(ds, expectations: Expectations, id_column: Optional[str], origin: "Origin"):
    """(passed rows as a Ray Dataset, bad rows with reasons as pandas, report).

    Raises ValidationFailed when on_failure is fail and anything failed, or when the bad share is
    above max_bad_fraction under quarantine, or when a table-level check failed. `origin` (the
    spec's) names the line of an expectation on a column the data does not have.
    """
    from ray.data.expressions import col, lit

    columns = list(ds.schema().names)
    rules = [r for r in rules_for(expectations) if r.column in columns]
    if rules:
        # One validation pass, kept: the bad rows and the passed rows are both read from it.
        flagged = flag_dataset(ds, expectations)[1].materialize()
        bad = flagged.filter(expr=col(REASONS) != lit("")).to_pandas()
        total = flagged.count()
    else:
        flagged, bad, total = None, pd.DataFrame(columns=[REASONS]), ds.count()
    failures = table_checks(expectations, total, columns, origin.where)
    report = report_from_bad_rows(rules, total, bad, id_column, failures)
    if failures:
        raise ValidationFailed(report, "data validation failed:\n  " + "\n  ".join(report.failure_lines()), bad)
    if report.bad_rows and expectations.on_failure == "fail":
        raise ValidationFailed(report, "data validation failed (on_failure: fail):\n  "
                               + "\n  ".join(report.failure_lines()), bad)
    if report.bad_rows and report.bad_fraction > expectations.max_bad_fraction:
        raise ValidationFailed(
            report, f"data validation failed: {report.bad_rows} of {report.rows} rows "
                    f"({report.bad_fraction:.2%}) are bad, above max_bad_fraction "
                    f"{expectations.max_bad_fraction:.2%}:\n  " + "\n  ".join(report.failure_lines()), bad)
    if flagged is None:
        return ds, bad, report
    passed = flagged.filter(expr=col(REASONS) == lit("")).drop_columns([REASONS])
    return passed, bad, report
