"""Metrics: the names and directions (`names`, no sklearn: the spec reads them) and the
computations (`compute`, sklearn.metrics), as flat dicts of plain floats.

`from pipeline.metrics import compute_metrics` works as before; the sklearn half is imported on
first use only, so loading a spec does not pay for it."""

from __future__ import annotations

from pipeline.metrics.names import (
    CLASSIFICATION_METRICS, CONFUSION_NAMES, DEFAULT_OBJECTIVE, LOWER_IS_BETTER, METRIC_ALIASES,
    REGRESSION_FORMULA_NAMES, REGRESSION_METRICS, better, canonical, metric_direction,
    metrics_for, mode, threshold_failures,
)

__all__ = [
    "CLASSIFICATION_METRICS", "CONFUSION_NAMES", "DEFAULT_OBJECTIVE", "LOWER_IS_BETTER",
    "METRIC_ALIASES", "REGRESSION_FORMULA_NAMES", "REGRESSION_METRICS", "better", "canonical",
    "classification_metrics", "compute_metrics", "confusion_matrix_table", "metric_direction",
    "metrics_for", "mode", "regression_metrics", "threshold_failures",
]

_COMPUTE = ("classification_metrics", "regression_metrics", "compute_metrics",
            "confusion_matrix_table")


def __getattr__(name: str):
    if name in _COMPUTE:
        from pipeline.metrics import compute
        return getattr(compute, name)
    raise AttributeError(f"module 'pipeline.metrics' has no attribute {name!r}")
