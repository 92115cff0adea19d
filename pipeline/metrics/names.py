"""What a metric is called and which way is better: the metric names of the seed, their
aliases, the names a custom-metric formula may use, and the direction of every metric.

No sklearn here: the spec reads these lists when it loads (`rayline check` stays quick);
`pipeline.metrics.compute` computes the metrics themselves.

Direction (`better`, `threshold_failures`, `metric_direction`)
    Lower is better for mse, rmse, mae, mape, log_loss, fp, fn, cost_matrix custom metrics and
    any other metric whose name ends in ``error``/``loss``/``cost``; higher is better otherwise.
    Pass the spec's CustomMetric definitions as ``custom`` so that a custom metric's explicit
    ``direction`` wins and a cost_matrix metric is always minimized whatever its name. Names
    prefixed ``train_``/``val_``/``validation_``/``test_`` take the direction of the metric.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1_score", "auc_roc", "log_loss",
                          "confusion_matrix")
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2_score", "mape")
METRIC_ALIASES = {"f1": "f1_score", "auc": "auc_roc", "roc_auc": "auc_roc", "r2": "r2_score"}
#: Names a classification custom-metric formula may use: the positive class's confusion counts.
CONFUSION_NAMES = ("tp", "fp", "tn", "fn", "n", "positives", "negatives")
#: Names a regression custom-metric formula may use.
REGRESSION_FORMULA_NAMES = ("n", "mse", "rmse", "mae", "r2_score", "mape", "mean_true", "mean_pred")
#: What `objective: auto` and a spec without a metric in selection_criteria rank by.
DEFAULT_OBJECTIVE = {"classification": ("f1_score", "max"), "regression": ("rmse", "min")}


def metrics_for(problem_type: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if problem_type == "classification" else REGRESSION_METRICS



#: Built-in metrics where a smaller value is better.
LOWER_IS_BETTER = frozenset({"mse", "rmse", "mae", "mape", "log_loss", "fp", "fn"})
_LOWER_SUFFIXES = ("error", "loss", "cost")
_SPLIT_PREFIXES = ("train_", "training_", "val_", "validation_", "test_")


def canonical(name: str) -> str:
    """The metric's own name for an alias (f1 -> f1_score); other names as given."""
    return METRIC_ALIASES.get(name, name)


def mode(metric: str, custom: Sequence[Any] = ()) -> str:
    """"max" or "min": the way Ray Tune and the selection rank by `metric`."""
    return "min" if metric_direction(metric, custom) == "minimize" else "max"


def metric_direction(metric: str, custom: Sequence[Any] = ()) -> str:
    """"minimize" or "maximize" for a metric name (see the module docstring)."""
    for definition in custom:
        if definition.name == metric:
            if definition.direction != "auto":
                return definition.direction
            if definition.cost_matrix is not None:
                return "minimize"
            break  # an "auto" formula metric: judged by its name, below
    name = canonical(metric)
    for prefix in _SPLIT_PREFIXES:
        if name.startswith(prefix) and canonical(name[len(prefix):]) in (
                *CLASSIFICATION_METRICS, *REGRESSION_METRICS, *LOWER_IS_BETTER):
            name = canonical(name[len(prefix):])
            break
    if name in LOWER_IS_BETTER or name.lower().endswith(_LOWER_SUFFIXES):
        return "minimize"
    return "maximize"


def _is_nan(value: Any) -> bool:
    try:
        return value is None or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def better(metric: str, a: float, b: float, custom: Sequence[Any] = ()) -> bool:
    """True if `a` is strictly better than `b` for `metric`; NaN is always worse."""
    if _is_nan(a):
        return False
    if _is_nan(b):
        return True
    if metric_direction(metric, custom) == "minimize":
        return float(a) < float(b)
    return float(a) > float(b)


def _num(value: float) -> str:
    """4 significant digits, shown as a Python float (0.057, 3.0, 0.543)."""
    return repr(float(f"{float(value):.4g}"))


def threshold_failures(metrics: Mapping[str, float], thresholds: Mapping[str, float],
                       custom: Sequence[Any] = ()) -> list[str]:
    """One human message per threshold not met (an empty list means all are met).

    For a higher-is-better metric the threshold is a minimum, for a lower-is-better one a
    maximum; meeting it exactly passes. A metric that is missing or NaN fails.
    """
    failures: list[str] = []
    for raw_name, limit in thresholds.items():
        name = raw_name if raw_name in metrics else canonical(raw_name)
        minimize = metric_direction(name, custom) == "minimize"
        kind = "maximum" if minimize else "threshold"
        if name not in metrics:
            failures.append(f"{name} was not computed, so it cannot meet the {kind} {_num(limit)}")
            continue
        value = metrics[name]
        if _is_nan(value):
            failures.append(f"{name} is NaN (could not be computed), so it cannot meet the "
                            f"{kind} {_num(limit)}")
        elif minimize and float(value) > float(limit):
            failures.append(f"{name} {_num(value)} is above the maximum {_num(limit)} "
                            f"by {_num(float(value) - float(limit))}")
        elif not minimize and float(value) < float(limit):
            failures.append(f"{name} {_num(value)} is below the threshold {_num(limit)} "
                            f"by {_num(float(limit) - float(value))}")
    return failures
