"""The spec's expectations as Great Expectations suites, run on Ray Data batches.

Modules: `batches` (one batch: the suite and type checks -> a reasons string per row), `dataset`
(the whole dataset: `unique` across blocks, every block flagged, what on_failure decides),
`report` (the report and ValidationFailed).

Each batch is validated by GE (COMPLETE result format, so every failing row index comes back);
we turn GE's per-expectation index lists into one reasons column per row. Rows with no reason
pass; the rest are the bad rows that `on_failure` decides about. The report (per rule: rows
checked, rows failed, a sample of bad values with their id) is built from those reasons, so the
counts always satisfy rows in = passed + bad.

The checks themselves (one `Rule` each, the GE expectation it becomes, the pandas type check)
are compiled from the column's input rules in pipeline.rules.suite; this module runs them.
"""

from pipeline.validation.batches import batch_reasons, flag_batch, rules_for
from pipeline.validation.dataset import duplicate_values, flag_dataset, validate_dataset
from pipeline.validation.report import (
    REASONS, SAMPLE_SIZE, RuleResult, ValidationFailed, ValidationReport, report_from_bad_rows,
    table_checks,
)
from pipeline.rules.suite import Rule

__all__ = ["REASONS", "SAMPLE_SIZE", "Rule", "RuleResult", "ValidationFailed", "ValidationReport",
           "batch_reasons", "duplicate_values", "flag_batch", "flag_dataset", "report_from_bad_rows",
           "rules_for", "table_checks", "validate_dataset"]
