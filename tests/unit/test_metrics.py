"""pipeline.metrics against values computed by hand on small arrays."""

import json
import math

import numpy as np
import pytest

from pipeline.metrics import (
    REGRESSION_FORMULA_NAMES, better, classification_metrics, compute_metrics,
    confusion_matrix_table, metric_direction, regression_metrics, threshold_failures,
)
from pipeline.metrics import CLASSIFICATION_METRICS
from pipeline.spec import CustomMetric, Evaluation

# Binary, string labels; positive class "yes".
Y_TRUE = ["no", "yes", "yes", "no", "yes", "no", "no", "yes"]
Y_PRED = ["no", "yes", "no", "no", "yes", "yes", "yes", "yes"]
#          tn    tp     fn    tn    tp     fp     fp     tp   -> tp 3, fp 2, tn 2, fn 1
P_YES = [0.1, 0.9, 0.4, 0.2, 0.8, 0.6, 0.7, 0.65]
PROBA = np.column_stack([1 - np.array(P_YES), P_YES])
CLASSES = ["no", "yes"]

# The spec reference's custom metrics.
COST = CustomMetric(name="cost_weighted_error", cost_matrix=[[0, 1], [5, 0]])
BUSINESS = CustomMetric(name="business_metric_1", formula="120 * tp - 20 * fp")


def all_plain_floats(result: dict) -> bool:
    return all(type(v) is float for v in result.values())


# --------------------------------------------------------------------------- binary

def test_binary_string_labels_hand_computed():
    m = classification_metrics(Y_TRUE, Y_PRED, PROBA, CLASSES, list(CLASSIFICATION_METRICS))
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1_score"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    # positive scores 0.9 0.4 0.8 0.65 vs negative 0.1 0.2 0.6 0.7: 4 + 2 + 4 + 3 of 16 pairs
    assert m["auc_roc"] == pytest.approx(13 / 16)
    p_correct = [0.9, 0.9, 0.4, 0.8, 0.8, 0.4, 0.3, 0.65]
    assert m["log_loss"] == pytest.approx(-sum(math.log(p) for p in p_correct) / 8)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3.0, 2.0, 2.0, 1.0)
    assert m["confusion_matrix.no.no"] == 2.0
    assert m["confusion_matrix.no.yes"] == 2.0
    assert m["confusion_matrix.yes.no"] == 1.0
    assert m["confusion_matrix.yes.yes"] == 3.0
    assert "confusion_matrix" not in m
    assert all_plain_floats(m)


def test_positive_class_is_classes_1():
    # The same data with the labels' roles swapped: "no" is now the positive class.
    m = classification_metrics(Y_TRUE, Y_PRED, PROBA[:, ::-1], ["yes", "no"],
                               ["precision", "recall", "auc_roc", "confusion_matrix"])
    assert m["precision"] == pytest.approx(2 / 3)   # predicted "no": 3, of which 2 are "no"
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["auc_roc"] == pytest.approx(13 / 16)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2.0, 1.0, 3.0, 2.0)


def test_numeric_labels_and_only_requested_names():
    m = classification_metrics(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), None, [0, 1],
                               ["accuracy", "f1_score", "auc_roc", "log_loss", "confusion_matrix"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["f1_score"] == pytest.approx(2 / 3)
    assert "auc_roc" not in m and "log_loss" not in m      # no proba: skipped
    assert m["confusion_matrix.1.0"] == 1.0 and m["fn"] == 1.0
    assert set(m) == {"accuracy", "f1_score", "tp", "fp", "tn", "fn", "confusion_matrix.0.0",
                      "confusion_matrix.0.1", "confusion_matrix.1.0", "confusion_matrix.1.1"}
    assert all_plain_floats(m)


def test_aliases_are_accepted():
    m = classification_metrics(Y_TRUE, Y_PRED, PROBA, CLASSES, ["f1", "auc"])
    assert set(m) == {"f1_score", "auc_roc"}


def test_unknown_metric_name_is_an_error():
    with pytest.raises(ValueError, match="unknown classification metric"):
        classification_metrics(Y_TRUE, Y_PRED, None, CLASSES, ["rmse"])


def test_proba_of_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match="proba has shape"):
        classification_metrics(Y_TRUE, Y_PRED, PROBA[:, :1], CLASSES, ["auc_roc"])


# --------------------------------------------------------------------------- custom metrics

def test_spec_reference_custom_metrics():
    m = classification_metrics(Y_TRUE, Y_PRED, PROBA, CLASSES, [], custom=[COST, BUSINESS])
    assert m["cost_weighted_error"] == pytest.approx((2 * 1 + 1 * 5) / 8)   # fp cost 1, fn cost 5
    assert m["business_metric_1"] == pytest.approx(120 * 3 - 20 * 2)
    assert set(m) == {"cost_weighted_error", "business_metric_1"}
    assert all_plain_floats(m)


def test_custom_metrics_from_a_spec_evaluation_section():
    evaluation = Evaluation.model_validate({"custom": [
        {"name": "cost_weighted_error", "cost_matrix": [[0, 1], [5, 0]]},
        {"name": "business_metric_1", "formula": "120 * tp - 20 * fp"},
        {"name": "share", "formula": "positives / n + negatives * 0"}]})
    m = compute_metrics("classification", Y_TRUE, Y_PRED, PROBA, CLASSES,
                        evaluation.classification, evaluation.custom)
    assert m["business_metric_1"] == 320.0
    assert m["share"] == pytest.approx(0.5)
    assert m["f1_score"] == pytest.approx(2 / 3)


def test_formula_division_by_zero_is_nan():
    metric = CustomMetric(name="fp_rate", formula="fp / (fp + tn)")
    m = classification_metrics(["yes", "yes"], ["yes", "yes"], None, CLASSES, [], [metric])
    assert math.isnan(m["fp_rate"])


def test_cost_matrix_size_must_match_classes():
    with pytest.raises(ValueError, match="cost_weighted_error.*3 classes"):
        classification_metrics(["a", "b", "c"], ["a", "b", "c"], None, ["a", "b", "c"], [], [COST])


def test_formula_on_multiclass_names_the_metric():
    with pytest.raises(ValueError, match="business_metric_1.*binary"):
        classification_metrics(["a", "b", "c"], ["a", "b", "c"], None, ["a", "b", "c"], [],
                               [BUSINESS])


# --------------------------------------------------------------------------- multiclass

MC_TRUE = ["a", "a", "b", "b", "c", "c"]
MC_PRED = ["a", "b", "b", "b", "c", "a"]
MC_CLASSES = ["a", "b", "c"]


def test_multiclass_macro_hand_computed():
    proba = np.array([[.8, .1, .1], [.6, .3, .1], [.1, .8, .1],
                      [.2, .7, .1], [.1, .1, .8], [.3, .1, .6]])   # every class perfectly ranked
    m = classification_metrics(MC_TRUE, MC_PRED, proba, MC_CLASSES, list(CLASSIFICATION_METRICS))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["f1_score"] == pytest.approx((1 / 2 + 0.8 + 2 / 3) / 3)
    assert m["auc_roc"] == pytest.approx(1.0)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([.8, .6, .8, .7, .8, .6])))
    assert m["confusion_matrix.a.b"] == 1.0 and m["confusion_matrix.c.a"] == 1.0
    assert m["confusion_matrix.b.b"] == 2.0
    assert len([k for k in m if k.startswith("confusion_matrix.")]) == 9
    assert "tp" not in m
    assert all_plain_floats(m)


def test_multiclass_cost_matrix_is_mean_cost_per_row():
    cost = CustomMetric(name="misclassification_cost",
                        cost_matrix=[[0, 1, 1], [1, 0, 1], [10, 1, 0]])
    m = classification_metrics(MC_TRUE, MC_PRED, None, MC_CLASSES, [], [cost])
    assert m["misclassification_cost"] == pytest.approx((1 + 10) / 6)   # a->b costs 1, c->a 10


def test_confusion_matrix_table_is_json_able():
    table = confusion_matrix_table(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]),
                                   np.array([0, 1]))
    assert table == {"classes": [0, 1], "matrix": [[2, 0], [1, 1]]}
    assert json.loads(json.dumps(table)) == table
    assert confusion_matrix_table(MC_TRUE, MC_PRED, MC_CLASSES)["matrix"] == \
        [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


# --------------------------------------------------------------------------- NaN, never raises

def test_auc_with_one_class_in_y_true_is_nan():
    m = classification_metrics(["no", "no", "no"], ["no", "yes", "no"],
                               np.array([[.9, .1], [.4, .6], [.8, .2]]), CLASSES,
                               ["accuracy", "auc_roc", "log_loss"])
    assert math.isnan(m["auc_roc"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([.9, .4, .8])))


def test_multiclass_auc_with_missing_class_is_nan():
    proba = np.full((4, 3), 1 / 3)
    m = classification_metrics(["a", "b", "a", "b"], ["a", "b", "c", "b"], proba, MC_CLASSES,
                               ["auc_roc", "accuracy"])
    assert math.isnan(m["auc_roc"]) and m["accuracy"] == pytest.approx(0.75)


def test_empty_sample_gives_nan_not_an_exception():
    m = classification_metrics([], [], np.empty((0, 2)), CLASSES, list(CLASSIFICATION_METRICS),
                               [COST])
    for name in ("accuracy", "precision", "recall", "f1_score", "auc_roc", "log_loss",
                 "cost_weighted_error"):
        assert math.isnan(m[name]), name
    assert m["tp"] == 0.0
    r = regression_metrics([], [], ["mse", "rmse", "mae", "r2_score", "mape"])
    assert all(math.isnan(v) for v in r.values())


def test_never_predicted_class_counts_as_zero_precision():
    m = classification_metrics(["no", "yes"], ["no", "no"], None, CLASSES,
                               ["precision", "recall", "f1_score"])
    assert m == {"precision": 0.0, "recall": 0.0, "f1_score": 0.0}


def test_nan_probabilities_give_nan():
    proba = np.array([[np.nan, np.nan], [.2, .8]])
    m = classification_metrics(["no", "yes"], ["no", "yes"], proba, CLASSES, ["auc_roc", "log_loss"])
    assert math.isnan(m["auc_roc"]) and math.isnan(m["log_loss"])


# --------------------------------------------------------------------------- regression

R_TRUE = [3, -0.5, 2, 7]
R_PRED = [2.5, 0.0, 2, 8]


def test_regression_hand_computed():
    m = regression_metrics(R_TRUE, R_PRED, ["mse", "rmse", "mae", "r2_score", "mape"])
    assert m["mse"] == pytest.approx((0.25 + 0.25 + 0 + 1) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(0.375))
    assert m["mae"] == pytest.approx((0.5 + 0.5 + 0 + 1) / 4)
    mean = sum(R_TRUE) / 4
    ss_tot = sum((y - mean) ** 2 for y in R_TRUE)
    assert m["r2_score"] == pytest.approx(1 - 1.5 / ss_tot)
    assert m["mape"] == pytest.approx((0.5 / 3 + 1 + 0 + 1 / 7) / 4)
    assert all_plain_floats(m)


def test_regression_aliases_and_subset():
    assert set(regression_metrics(R_TRUE, R_PRED, ["r2", "mae"])) == {"r2_score", "mae"}


def test_regression_undefined_values_are_nan():
    m = regression_metrics([0.0, 1.0], [0.5, 1.0], ["mape", "r2_score"])
    assert math.isnan(m["mape"])                          # an actual value of 0
    assert math.isnan(regression_metrics([2.0, 2.0], [1.0, 3.0], ["r2_score"])["r2_score"])
    assert math.isnan(regression_metrics([2.0], [1.0], ["r2_score"])["r2_score"])
    assert math.isnan(regression_metrics([1.0, 2.0], [np.nan, 2.0], ["mse"])["mse"])


def test_regression_custom_formula():
    by_n = CustomMetric(name="rows_times_two", formula="n * 2")
    # Aggregate names are accepted by regression_metrics (the spec model currently validates
    # custom formulas against the confusion names only, hence model_construct here).
    scaled = CustomMetric.model_construct(name="scaled_error", formula="rmse * n + mae",
                                          cost_matrix=None, direction="auto")
    m = regression_metrics(R_TRUE, R_PRED, ["mse"], [by_n, scaled])
    assert m["rows_times_two"] == 8.0
    assert m["scaled_error"] == pytest.approx(math.sqrt(0.375) * 4 + 0.5)
    assert set(m) == {"mse", "rows_times_two", "scaled_error"}
    assert "mse" in REGRESSION_FORMULA_NAMES


def test_regression_formula_with_confusion_names_is_an_error():
    with pytest.raises(ValueError, match="business_metric_1.*unknown name"):
        regression_metrics(R_TRUE, R_PRED, [], [BUSINESS])


def test_regression_cost_matrix_is_an_error():
    with pytest.raises(ValueError, match="cost_weighted_error.*classification"):
        regression_metrics(R_TRUE, R_PRED, ["mse"], [COST])


# --------------------------------------------------------------------------- dispatch

def test_compute_metrics_dispatches():
    r = compute_metrics("regression", R_TRUE, R_PRED, names=["mae"])
    assert r == {"mae": 0.5}
    assert set(compute_metrics("regression", R_TRUE, R_PRED)) == {"mse", "rmse", "mae",
                                                                   "r2_score", "mape"}
    c = compute_metrics("classification", Y_TRUE, Y_PRED, PROBA, names=["auc_roc"])
    assert c == {"auc_roc": pytest.approx(13 / 16)}           # classes inferred, sorted
    with pytest.raises(ValueError, match="problem_type"):
        compute_metrics("ranking", R_TRUE, R_PRED)


# --------------------------------------------------------------------------- better, thresholds

def test_better_direction():
    assert better("f1_score", 0.7, 0.6) and not better("f1_score", 0.6, 0.7)
    assert better("auc_roc", 0.9, 0.8) and better("accuracy", 1.0, 0.0)
    for name in ("mse", "rmse", "mae", "mape", "log_loss", "cost_weighted_error"):
        assert better(name, 1.0, 2.0) and not better(name, 2.0, 1.0), name
    assert not better("f1_score", 0.5, 0.5)
    assert better("test_rmse", 1.0, 2.0) and better("val_f1", 0.9, 0.1)


def test_better_nan_is_always_worse():
    nan = float("nan")
    assert better("f1_score", 0.1, nan) and better("rmse", 100.0, nan)
    assert not better("f1_score", nan, 0.1) and not better("rmse", nan, 100.0)
    assert not better("f1_score", nan, nan)
    assert better("f1_score", 0.1, None)


def test_better_uses_custom_definitions():
    # A cost matrix is minimized whatever its name; an explicit direction wins.
    penalty = CustomMetric(name="penalty", cost_matrix=[[0, 1], [5, 0]])
    profit_loss = CustomMetric(name="profit_loss", formula="120 * tp - 20 * fp",
                               direction="maximize")
    assert better("penalty", 1.0, 2.0, custom=[penalty])
    assert not better("penalty", 1.0, 2.0)                 # name alone: higher is better
    assert better("profit_loss", 2.0, 1.0, custom=[profit_loss])
    assert better("business_metric_1", 320.0, 100.0, custom=[BUSINESS])
    assert metric_direction("cost_weighted_error", [COST]) == "minimize"
    assert metric_direction("business_metric_1", [BUSINESS]) == "maximize"


def test_threshold_failure_messages():
    metrics = {"f1_score": 0.543, "auc_roc": 0.85, "rmse": 3.2, "mae": 1.0}
    failures = threshold_failures(metrics, {"f1_score": 0.6, "auc_roc": 0.8, "rmse": 3.0,
                                            "mae": 1.0})
    assert failures == ["f1_score 0.543 is below the threshold 0.6 by 0.057",
                        "rmse 3.2 is above the maximum 3.0 by 0.2"]


def test_threshold_met_exactly_passes_and_aliases_resolve():
    assert threshold_failures({"f1_score": 0.6, "auc_roc": 0.8}, {"f1": 0.6, "auc": 0.8}) == []


def test_threshold_missing_or_nan_metric_fails():
    failures = threshold_failures({"f1_score": float("nan")}, {"f1_score": 0.6, "auc_roc": 0.8,
                                                               "log_loss": 0.5})
    assert len(failures) == 3
    assert failures[0].startswith("f1_score is NaN") and "threshold 0.6" in failures[0]
    assert failures[1].startswith("auc_roc was not computed") and "threshold 0.8" in failures[1]
    assert failures[2].startswith("log_loss was not computed") and "maximum 0.5" in failures[2]


def test_threshold_on_custom_cost_matrix_is_a_maximum():
    failures = threshold_failures({"penalty": 0.9}, {"penalty": 0.5},
                                  custom=[CustomMetric(name="penalty", cost_matrix=[[0, 1], [5, 0]])])
    assert failures == ["penalty 0.9 is above the maximum 0.5 by 0.4"]
