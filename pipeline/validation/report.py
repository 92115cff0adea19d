"""The validation report: per rule, the rows checked and failed with a sample of bad values and
their ids; failures of the table as a whole; ValidationFailed, which carries the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import RaylineError
from pipeline.rules.suite import Rule
from pipeline.spec import Expectations


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
