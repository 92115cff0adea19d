"""The evaluate workload: metrics per model, latency, selection, the leaderboard, and the
champion's diagnostics (confusion matrix, ROC and precision-recall curves, residuals, slices).

Everything here works from an `EvaluationPlan` (the spec's evaluation section resolved for its
problem type: metrics, custom metrics, slices, thresholds, the ranking metric and latency
budget), not from the whole spec."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from pipeline.errors import RaylineError
from pipeline.spec import EvaluationPlan


@dataclass
class Candidate:
    family: str
    model: Any
    val: dict[str, float]
    test: dict[str, float]
    latency: dict[str, float]
    train_seconds: float


class NoEligibleModel(RaylineError, RuntimeError):
    """No candidate meets the selection criteria (e.g. the latency budget)."""

    title = "no model meets the selection criteria"


def predictions(plan: EvaluationPlan, model, X: np.ndarray, classes: Optional[list]):
    """(predicted labels or values, class probabilities or None)."""
    scores = model.predict_scores(X)
    if plan.problem_type == "regression":
        return scores, None
    return np.asarray(classes)[scores.argmax(axis=1)], scores


def split_metrics(plan: EvaluationPlan, model, X: np.ndarray, truth: np.ndarray,
                  classes: Optional[list]) -> dict[str, float]:
    from pipeline.metrics import compute_metrics

    if len(truth) == 0:
        return {}
    pred, proba = predictions(plan, model, X, classes)
    return compute_metrics(plan.problem_type, truth, pred, proba=proba, classes=classes,
                           names=list(plan.metrics), custom=list(plan.custom))


def measure_latency(predictor, frame: pd.DataFrame, singles: int = 200,
                    budget_s: float = 1.5) -> dict[str, float]:
    """Per-record and per-1,000-record inference time, fitted features included (milliseconds).
    At most `singles` single-record calls, stopping early once `budget_s` is spent."""
    records = frame[predictor.features.required_columns].to_dict(orient="records")
    if not records:
        return {}
    one: list[float] = []
    deadline = time.perf_counter() + budget_s
    for record in (records * (singles // len(records) + 1))[:singles]:
        start = time.perf_counter()
        predictor.predict_records([record])
        one.append((time.perf_counter() - start) * 1000)
        if start > deadline and len(one) >= 20:
            break
    batch = (records * (1000 // len(records) + 1))[:1000]
    many = []
    for _ in range(5):
        start = time.perf_counter()
        predictor.predict_records(batch)
        many.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(one, 50)), "p99_ms": float(np.percentile(one, 99)),
            "batch1000_p50_ms": float(np.percentile(many, 50))}


def select(plan: EvaluationPlan, candidates: list[Candidate]) -> Candidate:
    """The champion, following selection_criteria in order: the primary metric on validation,
    then the latency budget (models over it are out), then interpretability on ties."""
    from pipeline.metrics import better

    metric, _ = plan.primary
    eligible = list(candidates)
    budget = plan.latency_budget
    if budget:
        key, limit = budget
        eligible = [c for c in candidates if c.latency.get(key, float("inf")) <= limit]
        if not eligible:
            fastest = min(candidates, key=lambda c: c.latency.get(key, float("inf")))
            raise NoEligibleModel(f"no model meets the latency budget {key.split('_')[0]} <= "
                                  f"{limit:g} ms (fastest: {fastest.family} at "
                                  f"{fastest.latency.get(key, float('nan')):.2f} ms)")
    best = eligible[0]
    for c in eligible[1:]:
        a, b = c.val.get(metric, float("nan")), best.val.get(metric, float("nan"))
        tie = abs(a - b) <= 1e-6
        if (not tie and better(metric, a, b, plan.custom)) or \
                (tie and c.model.interpretability > best.model.interpretability):
            best = c
    return best


def leaderboard(candidates: list[Candidate], champion: Optional[Candidate]) -> list[dict]:
    rows = []
    for c in candidates:
        rows.append({"model": c.family, "champion": c is champion,
                     **{f"val_{k}": v for k, v in c.val.items() if not k.startswith("confusion")},
                     **{f"test_{k}": v for k, v in c.test.items() if not k.startswith("confusion")},
                     "latency_p50_ms": c.latency.get("p50_ms"), "latency_p99_ms": c.latency.get("p99_ms"),
                     "batch1000_ms": c.latency.get("batch1000_p50_ms"),
                     "interpretability": c.model.interpretability,
                     "train_seconds": round(c.train_seconds, 2)})
    return rows


def leaderboard_table(plan: EvaluationPlan, board: list[dict], title: str = "Leaderboard (validation)"):
    from rich.table import Table

    shown = [m for m in plan.metrics if m != "confusion_matrix"]
    table = Table(title=title, title_justify="left")
    table.add_column("model", no_wrap=True)
    for m in shown:
        table.add_column(m, justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    for row in board:
        cells = [f"{'★ ' if row['champion'] else ''}{row['model']}"]
        cells += [_fmt(row.get(f"val_{m}")) for m in shown]
        cells += [_fmt(row.get("latency_p50_ms"), 2), _fmt(row.get("latency_p99_ms"), 2)]
        table.add_row(*cells)
    return table


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- diagnostics

def slice_metrics(plan: EvaluationPlan, frame: pd.DataFrame, truth: np.ndarray, pred: np.ndarray,
                  proba: Optional[np.ndarray], classes: Optional[list]) -> dict[str, dict[str, dict]]:
    """Metrics per value of each `evaluation.slices` column: {column: {value: {n, metric: v}}}."""
    from pipeline.metrics import compute_metrics

    out: dict[str, dict[str, dict]] = {}
    names = [m for m in plan.metrics if m != "confusion_matrix"]
    for column in plan.slices:
        values = frame[column].astype("string").fillna("<null>").to_numpy()
        out[column] = {}
        for value in sorted(set(values)):
            mask = values == value
            metrics = compute_metrics(plan.problem_type, truth[mask], pred[mask],
                                      proba=None if proba is None else proba[mask],
                                      classes=classes, names=names)
            out[column][str(value)] = {"n": int(mask.sum()), **metrics}
    return out


def diagnostics(plan: EvaluationPlan, frame: pd.DataFrame, truth: np.ndarray, pred: np.ndarray,
                proba: Optional[np.ndarray], classes: Optional[list], directory: Path) -> list[Path]:
    """Plots (PNG) and their data (JSON) for the champion on the test split."""
    import matplotlib

    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if plan.problem_type == "classification":
        written += _confusion(truth, pred, classes, directory)
        written += _curves(truth, proba, classes, directory)
    else:
        written += _residuals(truth, pred, directory)
    if plan.slices:
        path = directory / "slices.json"
        path.write_text(json.dumps(slice_metrics(plan, frame, truth, pred, proba, classes), indent=2))
        written.append(path)
    return written


def _save(fig, directory: Path, name: str, data: dict) -> list[Path]:
    import matplotlib.pyplot as plt

    png, js = directory / f"{name}.png", directory / f"{name}.json"
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    js.write_text(json.dumps(data, indent=2, default=float))
    return [png, js]


def _confusion(truth, pred, classes, directory: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from pipeline.metrics import confusion_matrix_table

    table = confusion_matrix_table(truth, pred, classes)
    matrix = np.asarray(table["matrix"])
    fig, ax = plt.subplots(figsize=(4 + 0.4 * len(classes), 3.5 + 0.4 * len(classes)))
    ax.imshow(matrix, cmap="Blues")
    labels = [str(c) for c in table["classes"]]
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_title("Confusion matrix (test)")
    return _save(fig, directory, "confusion_matrix", table)


def _curves(truth, proba, classes, directory: Path) -> list[Path]:
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    if proba is None:
        return []
    positives = classes[1:] if len(classes) == 2 else classes
    roc, pr = {}, {}
    fig_roc, ax_roc = plt.subplots(figsize=(5, 4.5))
    fig_pr, ax_pr = plt.subplots(figsize=(5, 4.5))
    for label in positives:
        j = classes.index(label)
        y = (np.asarray(truth) == label).astype(int)
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, proba[:, j])
        precision, recall, _ = precision_recall_curve(y, proba[:, j])
        roc[str(label)] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(auc(fpr, tpr))}
        pr[str(label)] = {"precision": precision.tolist(), "recall": recall.tolist()}
        ax_roc.plot(fpr, tpr, label=f"{label} (AUC {auc(fpr, tpr):.3f})")
        ax_pr.plot(recall, precision, label=str(label))
    ax_roc.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    ax_roc.legend(loc="lower right")
    ax_pr.legend(loc="lower left")
    return _save(fig_roc, directory, "roc_curve", roc) + _save(fig_pr, directory, "pr_curve", pr)


def _residuals(truth, pred, directory: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    truth, pred = np.asarray(truth, dtype=float), np.asarray(pred, dtype=float)
    residual = truth - pred
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(pred, residual, s=6, alpha=0.5)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals (test)")
    step = max(1, len(truth) // 2000)  # the JSON keeps a sample; the plot has every point
    return _save(fig, directory, "residuals", {"predicted": pred[::step].tolist(),
                                                "residual": residual[::step].tolist(),
                                                "mean": float(residual.mean()),
                                                "std": float(residual.std())})
