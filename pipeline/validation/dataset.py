"""The whole dataset: `unique` found across every block first, then every block flagged (lazily,
so a caller that cannot hold the data streams it), the report, and what on_failure decides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import pandas as pd

from pipeline.spec import Expectations
from pipeline.validation.batches import _flag_table, _is_null, rules_for
from pipeline.validation.report import REASONS, ValidationFailed, report_from_bad_rows, table_checks

if TYPE_CHECKING:
    from pipeline.spec import Origin


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
