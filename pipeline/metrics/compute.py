"""Evaluation metrics, built on sklearn.metrics, as flat dicts of plain Python floats.

Everything returned is a scalar so it can be logged as an MLflow metric as is.

Classification (`classification_metrics`)
    accuracy, precision, recall, f1_score, auc_roc, log_loss, confusion_matrix.
    * Binary (2 classes): the positive class is ``classes[1]`` (with sorted classes, as a fitted
      sklearn estimator's ``classes_`` are, the larger label: "yes" of "no"/"yes", 1 of 0/1);
      precision/recall/f1 are those of the positive class and auc_roc is computed from
      ``proba[:, 1]``.
    * Multiclass: precision/recall/f1 are macro averages over ``classes``; auc_roc is the
      one-vs-rest macro average.
    * precision/recall/f1 of a class that is never predicted (or never present) count as 0.0,
      sklearn's ``zero_division=0`` convention.
    * confusion_matrix is flattened into ``confusion_matrix.<actual>.<predicted>`` = count; for a
      binary problem the counts are also returned as ``tp``, ``fp``, ``tn``, ``fn``.
    * auc_roc and log_loss need ``proba``; with ``proba=None`` they are left out of the result.
    * A metric that cannot be computed (auc_roc when y_true holds one class, any metric of an
      empty sample, ...) is NaN; it never raises. Misuse of the API (a proba of the wrong shape,
      a cost matrix of the wrong size, a formula on a multiclass problem) does raise ValueError.

Custom metrics (``spec.CustomMetric``: name, cost_matrix, formula, direction)
    * ``cost_matrix``: rows are the actual class, columns the predicted class, both in the order
      of ``classes``. The value is the **mean cost per row**: ``sum(cost * confusion) / n``.
      Lower is better.
    * ``formula`` (classification, binary only): a ``pipeline.formula`` expression over the
      confusion counts of the positive class: ``tp, fp, tn, fn``, ``n`` (rows),
      ``positives`` (actual positives, tp + fn) and ``negatives`` (actual negatives, tn + fp).
      Higher is better unless its `direction` says minimize or its name ends in error/loss/cost.
    * ``formula`` (regression): over ``n``, ``mse``, ``rmse``, ``mae``, ``r2_score``, ``mape``,
      ``mean_true`` and ``mean_pred`` (see REGRESSION_FORMULA_NAMES).
      A cost_matrix on a regression problem is a ValueError.

Regression (`regression_metrics`)
    mse, rmse, mae, r2_score, mape. mape is a fraction (0.1 = 10%), as in sklearn, and NaN when
    any actual value is 0 (it is undefined there). r2_score is NaN when it is undefined (fewer
    than two rows, or constant actual values).


Direction and thresholds: pipeline.metrics.names.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sklearn import metrics as skm

from pipeline.formula import Formula
from pipeline.metrics.names import (
    CLASSIFICATION_METRICS, CONFUSION_NAMES, REGRESSION_FORMULA_NAMES, REGRESSION_METRICS, canonical,
)

NAN = float("nan")


# --------------------------------------------------------------------------- helpers

def _f(value: Any) -> float:
    """A plain Python float; anything non-finite or uncomputable becomes NaN."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return NAN
    return out if math.isfinite(out) else NAN


def _safe(func, *args, **kwargs) -> float:
    """Run a sklearn metric; any failure (one class present, empty input, NaN input) is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _f(func(*args, **kwargs))
        except (ValueError, TypeError, ZeroDivisionError, IndexError, FloatingPointError):
            return NAN


def _labels(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        array = array.reshape(-1)
    return array


def _label_text(label: Any) -> str:
    """A class label as it appears in an MLflow metric key (letters, digits, _ - . space /)."""
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    return re.sub(r"[^\w\-. /]", "_", str(label))


def _plain(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence) -> np.ndarray:
    if len(y_true) == 0:
        return np.zeros((len(classes), len(classes)), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skm.confusion_matrix(y_true, y_pred, labels=list(classes))


# --------------------------------------------------------------------------- classification

def classification_metrics(y_true, y_pred, proba, classes: list, names: list[str],
                           custom: Sequence[Any] = ()) -> dict[str, float]:
    """Classification metrics named in `names` (see the module docstring), plus `custom`."""
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} rows but y_pred has {len(y_pred)}")
    classes = list(classes)
    n_classes = len(classes)
    if n_classes < 1:
        raise ValueError("classes is empty")
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float64)
        if proba.ndim != 2 or proba.shape != (len(y_true), n_classes):
            raise ValueError(f"proba has shape {proba.shape}; expected ({len(y_true)}, {n_classes}) "
                             f"aligned with classes {classes}")
    names = [canonical(n) for n in names]
    unknown = [n for n in names if n not in CLASSIFICATION_METRICS]
    if unknown:
        raise ValueError(f"unknown classification metric(s) {', '.join(unknown)}; "
                         f"known: {', '.join(CLASSIFICATION_METRICS)}")

    binary = n_classes == 2
    empty = len(y_true) == 0
    out: dict[str, float] = {}
    prf = dict(labels=classes, zero_division=0.0)
    prf.update(dict(pos_label=classes[1], average="binary") if binary else dict(average="macro"))

    for name in names:
        if name == "accuracy":
            out[name] = NAN if empty else _safe(skm.accuracy_score, y_true, y_pred)
        elif name == "precision":
            out[name] = NAN if empty else _safe(skm.precision_score, y_true, y_pred, **prf)
        elif name == "recall":
            out[name] = NAN if empty else _safe(skm.recall_score, y_true, y_pred, **prf)
        elif name == "f1_score":
            out[name] = NAN if empty else _safe(skm.f1_score, y_true, y_pred, **prf)
        elif name == "auc_roc":
            if proba is None:
                continue
            if empty or n_classes < 2:
                out[name] = NAN
            elif binary:
                out[name] = _safe(skm.roc_auc_score, y_true == classes[1], proba[:, 1])
            else:
                out[name] = _safe(skm.roc_auc_score, y_true, proba, multi_class="ovr",
                                  average="macro", labels=classes)
        elif name == "log_loss":
            if proba is None:
                continue
            out[name] = NAN if empty or n_classes < 2 else _safe(
                skm.log_loss, y_true, proba, labels=classes)
        elif name == "confusion_matrix":
            cm = _confusion(y_true, y_pred, classes)
            for i, actual in enumerate(classes):
                for j, predicted in enumerate(classes):
                    out[f"confusion_matrix.{_label_text(actual)}.{_label_text(predicted)}"] = \
                        float(cm[i, j])
            if binary:
                out.update({k: float(v) for k, v in _binary_counts(cm).items()
                            if k in ("tp", "fp", "tn", "fn")})

    for metric in custom:
        out[metric.name] = _classification_custom(metric, y_true, y_pred, classes)
    return out


def _binary_counts(cm: np.ndarray) -> dict[str, int]:
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": tp + fp + tn + fn,
            "positives": tp + fn, "negatives": tn + fp}


def _classification_custom(metric: Any, y_true: np.ndarray, y_pred: np.ndarray,
                           classes: list) -> float:
    n_classes = len(classes)
    if metric.cost_matrix is not None:
        cost = np.asarray(metric.cost_matrix, dtype=np.float64)
        if cost.shape != (n_classes, n_classes):
            raise ValueError(
                f"custom metric {metric.name!r}: cost_matrix is {cost.shape[0]}x"
                f"{cost.shape[1] if cost.ndim == 2 else '?'} but the problem has {n_classes} "
                f"classes {classes} (rows: actual, columns: predicted, in that order)")
        cm = _confusion(y_true, y_pred, classes)
        n = cm.sum()
        return NAN if n == 0 else _f((cost * cm).sum() / n)
    if n_classes != 2:
        raise ValueError(
            f"custom metric {metric.name!r}: a formula over confusion counts "
            f"({', '.join(CONFUSION_NAMES)}) needs a binary problem, but this one has "
            f"{n_classes} classes {classes}; use a cost_matrix instead")
    counts = _binary_counts(_confusion(y_true, y_pred, classes))
    return _evaluate_formula(metric, counts, CONFUSION_NAMES)


def _evaluate_formula(metric: Any, values: Mapping[str, float],
                      allowed: Iterable[str]) -> float:
    try:
        formula = Formula.parse(metric.formula, allowed_names=allowed)
        result, _ = formula.evaluate({k: np.float64(v) for k, v in values.items()})
    except (ValueError, FloatingPointError, OverflowError) as exc:
        raise ValueError(f"custom metric {metric.name!r}: {exc}") from None
    return _f(np.asarray(result).reshape(-1)[0]) if np.asarray(result).size else NAN


# --------------------------------------------------------------------------- regression

def regression_metrics(y_true, y_pred, names: list[str],
                       custom: Sequence[Any] = ()) -> dict[str, float]:
    """Regression metrics named in `names` (see the module docstring), plus `custom`."""
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} rows but y_pred has {len(y_pred)}")
    names = [canonical(n) for n in names]
    unknown = [n for n in names if n not in REGRESSION_METRICS]
    if unknown:
        raise ValueError(f"unknown regression metric(s) {', '.join(unknown)}; "
                         f"known: {', '.join(REGRESSION_METRICS)}")
    for metric in custom:
        if metric.cost_matrix is not None:
            raise ValueError(f"custom metric {metric.name!r}: a cost_matrix needs a "
                             "classification problem; use a formula for regression")

    wanted = set(names) | ({"mse", "rmse", "mae", "r2_score", "mape"} if custom else set())
    values: dict[str, float] = {}
    empty = len(y_true) == 0
    if "mse" in wanted:
        values["mse"] = NAN if empty else _safe(skm.mean_squared_error, y_true, y_pred)
    if "rmse" in wanted:
        values["rmse"] = NAN if empty else _safe(skm.root_mean_squared_error, y_true, y_pred)
    if "mae" in wanted:
        values["mae"] = NAN if empty else _safe(skm.mean_absolute_error, y_true, y_pred)
    if "r2_score" in wanted:
        values["r2_score"] = NAN if len(y_true) < 2 else _safe(
            skm.r2_score, y_true, y_pred, force_finite=False)
    if "mape" in wanted:
        values["mape"] = NAN if empty or np.any(y_true == 0) else _safe(
            skm.mean_absolute_percentage_error, y_true, y_pred)

    out = {name: values[name] for name in names}
    if custom:
        context = dict(values, n=float(len(y_true)),
                       mean_true=NAN if empty else _f(np.mean(y_true)),
                       mean_pred=NAN if empty else _f(np.mean(y_pred)))
        for metric in custom:
            out[metric.name] = _evaluate_formula(metric, context, REGRESSION_FORMULA_NAMES)
    return out


# --------------------------------------------------------------------------- dispatch, artifacts

def compute_metrics(problem_type: str, y_true, y_pred, proba=None, classes=None, names=(),
                    custom=()) -> dict[str, float]:
    """Dispatch on problem_type. Empty `names` means every metric of that problem type.

    For classification, `classes` defaults to the sorted labels of y_true and y_pred together
    (the order a fitted sklearn estimator's ``classes_`` and ``predict_proba`` columns have).
    """
    if problem_type == "classification":
        if classes is None:
            classes = sorted(set(_labels(y_true).tolist()) | set(_labels(y_pred).tolist()))
        return classification_metrics(y_true, y_pred, proba, list(classes),
                                      list(names) or list(CLASSIFICATION_METRICS), custom)
    if problem_type == "regression":
        return regression_metrics(y_true, y_pred, list(names) or list(REGRESSION_METRICS), custom)
    raise ValueError(f"problem_type must be classification or regression, got {problem_type!r}")


def confusion_matrix_table(y_true, y_pred, classes) -> dict:
    """``{"classes": [...], "matrix": [[...]]}``: rows actual, columns predicted; JSON-able."""
    classes = list(classes)
    cm = _confusion(_labels(y_true), _labels(y_pred), classes)
    return {"classes": [_plain(c) for c in classes],
            "matrix": [[int(v) for v in row] for row in cm]}


