"""Batch scoring without Ray: the row checks, and one actor's work on an Arrow batch."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.predictor import FieldSpec, InputSchema
from pipeline.scoring import ScoreBatches, ScoringError, _check_columns, output_plan, reason_of, row_errors

SCHEMA = InputSchema([
    FieldSpec("tenure", "numeric", nullable=False, minimum=0, maximum=100),
    FieldSpec("charges", "numeric"),
    FieldSpec("contract", "categorical", nullable=False, values=["monthly", "yearly"]),
    FieldSpec("senior", "numeric", values=[0, 1]),
    FieldSpec("paperless", "boolean"),
])


def _frame(**overrides) -> pd.DataFrame:
    base = {"tenure": [1, 2, 3], "charges": [10.0, 20.0, 30.0], "contract": ["monthly", "yearly", "monthly"],
            "senior": [0, 1, 0], "paperless": [True, False, True]}
    base.update(overrides)
    return pd.DataFrame(base)


def test_good_rows_have_no_error():
    assert list(row_errors(_frame(), SCHEMA)) == [None, None, None]


def test_each_rule_names_the_column_and_the_value():
    frame = _frame(tenure=[None, 150, 5], charges=["abc", "12.5", None],
                   contract=["monthly", "weekly", None], senior=[0, 2, 1],
                   paperless=["yes", "maybe", None])
    errors = row_errors(frame, SCHEMA)
    assert errors[0] == "tenure: null not allowed; charges: not a number ('abc')"
    assert errors[1] == ("tenure: outside [0, 100] (150.0); contract: not one of ['monthly', 'yearly'] "
                         "('weekly'); senior: not one of [0, 1] (2); paperless: not a boolean ('maybe')")
    assert errors[2] == "contract: null not allowed"
    assert [reason_of(p) for p in errors[1].split("; ")][:2] == ["tenure: outside [0, 100]",
                                                                  "contract: not one of ['monthly', 'yearly']"]


def test_numbers_as_text_and_integral_floats_are_accepted():
    frame = _frame(charges=["10", " 20.5 ", "3e2"], senior=[0.0, 1.0, np.nan])
    assert list(row_errors(frame, SCHEMA)) == [None, None, None]


def test_a_missing_column_stops_the_whole_job():
    with pytest.raises(ScoringError, match=r"has no column\(s\) contract, id"):
        _check_columns(["tenure", "charges", "senior", "paperless"], SCHEMA, ["id"], "in.csv")


class _Stub:
    """A Predictor's surface: schema, classes, problem_type, predict_frame."""

    schema = InputSchema([FieldSpec("x", "numeric", nullable=False, minimum=0)])
    classes = ["no", "yes"]
    problem_type = "classification"
    meta = {"family": "stub"}

    def predict_frame(self, frame):
        if (frame["x"] == 13).any():
            raise ValueError("unlucky")
        p = frame["x"].astype(float).to_numpy() / 100
        return pd.DataFrame({"prediction": np.where(p > 0.5, "yes", "no"),
                             "probability_no": 1 - p, "probability_yes": p}, index=frame.index)


def test_an_actor_scores_good_rows_and_keeps_bad_ones_with_their_reason():
    table = pa.table({"id": ["a", "b", "c", "d", "e"], "x": [10, None, 90, 13, -1]})
    plan = output_plan(_Stub(), table.schema, ["id"], "m", "7",
                       datetime(2026, 1, 2, tzinfo=timezone.utc), "run1")
    out = ScoreBatches(_Stub, plan)(table)
    assert out.schema == plan.schema
    rows = out.to_pylist()
    assert [r["id"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert [r["prediction"] for r in rows] == ["no", None, "yes", None, None]
    assert rows[2]["probability_yes"] == pytest.approx(0.9)
    assert [r["error"] for r in rows] == [None, "x: null not allowed", None, "model: unlucky",
                                          "x: below 0 (-1.0)"]
    assert {(r["model_name"], r["model_version"], r["score_run_id"]) for r in rows} == {("m", "7", "run1")}
    assert rows[0]["scored_at"] == datetime(2026, 1, 2, tzinfo=timezone.utc)


def test_an_all_bad_batch_keeps_the_output_types():
    table = pa.table({"id": [1, 2], "x": pa.array([None, None], type=pa.float64())})
    plan = output_plan(_Stub(), table.schema, ["id"], "m", "7", datetime.now(timezone.utc), "r")
    out = ScoreBatches(_Stub, plan)(table)
    assert out.schema == plan.schema and out.column("prediction").null_count == 2
