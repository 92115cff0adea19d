"""pipeline.validation on pandas frames: which rows each rule flags (Great Expectations underneath),
the report built from the bad rows, and the table-level checks. No Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.spec import Expectations, parse_spec
from pipeline.validation import (
    REASONS, SAMPLE_SIZE, Rule, ValidationReport, flag_batch, report_from_bad_rows, rules_for, table_checks,
)


def E(*columns: dict, **kw) -> Expectations:
    return Expectations(columns=list(columns), **kw)


def whole_dataset_duplicates(frame: pd.DataFrame, rules) -> dict[str, list]:
    """What validate_dataset's groupby pass hands flag_batch: values seen twice or more."""
    return {r.column: [v for v, n in frame[r.column].value_counts().items() if n > 1]
            for r in rules if r.rule == "unique"}


def flag(frame: pd.DataFrame, rules) -> pd.DataFrame:
    return flag_batch(frame, rules, duplicates=whole_dataset_duplicates(frame, rules))


def reasons(frame: pd.DataFrame, *columns: dict) -> list[str]:
    return flag(frame, rules_for(E(*columns)))[REASONS].tolist()


def bad_rows(flagged: pd.DataFrame) -> pd.DataFrame:
    return flagged[flagged[REASONS] != ""]


# 12 customers; rows 2, 5 and 9 break range [0, 100] (0 and 100 themselves are inside).
TENURE = [5, 0, -1, 50, 100, 101, 99, 7, 12, 250, 64, 33]
IDS = [f"C{i:03d}" for i in range(1, 13)]


@pytest.fixture(scope="module")
def churn_frame() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": IDS, "tenure_months": TENURE,
                         "monthly_charges": np.linspace(20.0, 120.0, 12)})


# --------------------------------------------------------------------------- rules_for

def test_rules_for_order_detail_params():
    rules = rules_for(E({"column": "t", "type": "numeric", "range": [0, 100], "nullable": False,
                         "values": [1, 2], "unique": True, "regex": r"^\d+$"}))
    assert [(r.column, r.rule) for r in rules] == [
        ("t", "type"), ("t", "range"), ("t", "nullable"), ("t", "values"), ("t", "unique"), ("t", "regex")]
    # human text: exact wording may change, the values it shows may not
    assert "numeric" in rules[0].detail
    assert "[0, 100]" in rules[1].detail
    assert "{1, 2}" in rules[3].detail
    assert r"^\d+$" in rules[5].detail
    assert [r.key for r in rules] == ["t:type", "t:range", "t:nullable", "t:values", "t:unique", "t:regex"]
    assert rules[1].params == {"min": 0.0, "max": 100.0}
    assert rules[3].params == {"values": [1, 2]}


def test_rules_for_open_range_and_long_value_list():
    [low_open] = rules_for(E({"column": "t", "range": [None, 10]}))
    assert "[-inf, 10]" in low_open.detail
    assert low_open.params == {"min": None, "max": 10.0}
    [values] = rules_for(E({"column": "c", "values": list(range(10))}))
    assert "{0, 1, 2, 3, 4, 5, 6, 7, ...}" in values.detail
    assert values.params["values"] == list(range(10))


def test_rules_for_skips_nullable_true_and_nothing():
    assert rules_for(E({"column": "a", "nullable": True}, {"column": "b"})) == []


# --------------------------------------------------------------------------- flag_batch

def test_range_flags_exactly_the_three_breaking_rows(churn_frame):
    flagged = flag_batch(churn_frame, rules_for(E({"column": "tenure_months", "range": [0, 100]})))
    assert flagged[REASONS].tolist() == ["", "", "tenure_months:range", "", "", "tenure_months:range",
                                         "", "", "", "tenure_months:range", "", ""]
    assert bad_rows(flagged)["customer_id"].tolist() == ["C003", "C006", "C010"]
    assert bad_rows(flagged)["tenure_months"].tolist() == [-1, 101, 250]


def test_flag_batch_keeps_data_and_does_not_mutate_input():
    frame = pd.DataFrame({"t": [1, 500, 3]}, index=[10, 20, 30])
    before = frame.copy()
    flagged = flag_batch(frame, rules_for(E({"column": "t", "range": [0, 100]})))
    pd.testing.assert_frame_equal(frame, before)
    assert list(flagged.index) == [0, 1, 2]
    assert list(flagged.columns) == ["t", REASONS]
    assert flagged["t"].tolist() == [1, 500, 3]
    assert flagged[REASONS].tolist() == ["", "t:range", ""]


def test_flag_batch_empty_frame():
    flagged = flag_batch(pd.DataFrame({"t": pd.Series([], dtype=float)}),
                         rules_for(E({"column": "t", "range": [0, 1], "nullable": False})))
    assert len(flagged) == 0
    assert list(flagged.columns) == ["t", REASONS]


def test_open_ended_range():
    frame = pd.DataFrame({"t": [-5.0, 5.0, 1e9]})
    assert reasons(frame, {"column": "t", "range": [0, None]}) == ["t:range", "", ""]
    assert reasons(frame, {"column": "t", "range": [None, 0]}) == ["", "t:range", "t:range"]


def test_nullable_false():
    frame = pd.DataFrame({"a": [1.0, None, np.nan, 3.0], "s": ["x", None, "y", "z"]})
    assert reasons(frame, {"column": "a", "nullable": False}, {"column": "s", "nullable": False}) == [
        "", "a:nullable;s:nullable", "a:nullable", ""]


def test_nulls_are_not_range_or_values_failures():
    frame = pd.DataFrame({"t": [1.0, None, 200.0], "c": ["a", None, "b"]})
    assert reasons(frame, {"column": "t", "range": [0, 100]}, {"column": "c", "values": ["a", "b"]}) == [
        "", "", "t:range"]


def test_values_on_string_categories():
    frame = pd.DataFrame({"contract": ["one_year", "two_year", "weekly", "month-to-month", "One_Year"]})
    assert reasons(frame, {"column": "contract", "values": ["month-to-month", "one_year", "two_year"]}) == [
        "", "", "contract:values", "", "contract:values"]


def test_values_0_1_match_int_and_string_columns():
    frame = pd.DataFrame({"as_int": [0, 1, 2, 1, 0], "as_text": ["0", "1", "1", "x", None],
                          "as_float": [0.0, 1.0, 1.0, 1.0, 3.0]})
    spec = [{"column": "as_int", "values": [0, 1]}, {"column": "as_text", "values": [0, 1]},
            {"column": "as_float", "values": [0, 1]}]
    assert reasons(frame, *spec) == ["", "", "as_int:values", "as_text:values", "as_float:values"]


def test_values_0_1_on_nullable_int_column():
    frame = pd.DataFrame({"c": pd.array([0, 1, None, 2], dtype="Int64")})
    assert reasons(frame, {"column": "c", "values": [0, 1]}) == ["", "", "", "c:values"]


def test_values_0_1_match_pandas_string_dtype():
    frame = pd.DataFrame({"c": pd.array(["0", "1", "2"], dtype="string")})
    assert reasons(frame, {"column": "c", "values": [0, 1]}) == ["", "", "c:values"]


def test_regex():
    frame = pd.DataFrame({"id": ["C001", "C02", "X003", "C0044", "C123"]})
    assert reasons(frame, {"column": "id", "regex": r"^C\d{3}$"}) == ["", "id:regex", "id:regex", "id:regex", ""]


def test_unique_flags_every_duplicate_found_across_the_dataset():
    # Duplicates are found over the whole dataset first (a Ray Data groupby in validate_dataset);
    # flag_batch marks every row holding one of them, in whichever batch it sits.
    frame = pd.DataFrame({"id": ["a", "b", "b", "c", "a", "d"]})
    rules = rules_for(Expectations(columns=[{"column": "id", "unique": True}]))
    out = flag_batch(frame, rules, duplicates={"id": ["a", "b"]})
    assert out[REASONS].tolist() == ["id:unique", "id:unique", "id:unique", "", "id:unique", ""]
    out = flag_batch(frame.iloc[3:], rules, duplicates={"id": ["a", "b"]})
    assert out[REASONS].tolist() == ["", "id:unique", ""]


def test_type_numeric_on_object_column():
    frame = pd.DataFrame({"n": ["1", "2.5", "abc", None, 3, "-4e2"]}, dtype=object)
    assert reasons(frame, {"column": "n", "type": "numeric"}) == ["", "", "n:type", "", "", ""]


def test_type_integer():
    frame = pd.DataFrame({"n": ["1", "2.5", "abc", None, 3, 4.0]}, dtype=object)
    assert reasons(frame, {"column": "n", "type": "integer"}) == ["", "n:type", "n:type", "", "", ""]


def test_type_numeric_rejects_booleans():
    frame = pd.DataFrame({"b": [True, False]})
    assert reasons(frame, {"column": "b", "type": "numeric"}) == ["b:type", "b:type"]


def test_type_boolean_and_datetime():
    frame = pd.DataFrame({"b": [True, False, 1, 0, "yes", None, "true"],
                          "d": ["2024-01-01", "not a date", None, "2024-02-30", "2024-12-31", None, "2020-01-01"]},
                         dtype=object)
    assert reasons(frame, {"column": "b", "type": "boolean"}, {"column": "d", "type": "datetime"}) == [
        "", "d:type", "", "d:type", "b:type", "", ""]


def test_type_categorical_and_string_accept_anything():
    frame = pd.DataFrame({"c": [1, "a", None, 2.5]}, dtype=object)
    assert reasons(frame, {"column": "c", "type": "categorical"}, {"column": "c", "type": "string"}) == [""] * 4


def test_one_row_many_reasons():
    frame = pd.DataFrame({"t": [500.0, 500.0, 5.0, None]})
    got = reasons(frame, {"column": "t", "type": "numeric", "range": [0, 100], "unique": True,
                          "nullable": False})
    assert [set(r.split(";")) - {""} for r in got] == [
        {"t:range", "t:unique"}, {"t:range", "t:unique"}, set(), {"t:nullable"}]


@pytest.mark.parametrize("data", [["5", "abc", "500", "7"], ["5", "50", "500", "7"], [5, "abc", 500, 7]])
def test_range_on_object_column_still_flags_out_of_range(data):
    frame = pd.DataFrame({"t": data}, dtype=object)
    got = reasons(frame, {"column": "t", "type": "numeric", "range": [0, 100]})
    assert "t:range" in got[2].split(";")   # the 500 must never pass range [0, 100]


# --------------------------------------------------------------------------- the report

@pytest.fixture(scope="module")
def churn_report(churn_frame) -> ValidationReport:
    rules = rules_for(E({"column": "tenure_months", "type": "numeric", "range": [0, 100], "nullable": False},
                        {"column": "customer_id", "unique": True}))
    flagged = flag_batch(churn_frame, rules)
    return report_from_bad_rows(rules, len(churn_frame), bad_rows(flagged), "customer_id", [])


def test_report_counts(churn_report):
    r = churn_report
    assert (r.rows, r.bad_rows, r.passed_rows) == (12, 3, 9)
    assert r.bad_fraction == pytest.approx(0.25)
    assert r.success is False
    by_key = {f"{x.column}:{x.rule}": x for x in r.results}
    assert list(by_key) == ["tenure_months:type", "tenure_months:range", "tenure_months:nullable",
                            "customer_id:unique"]
    assert all(x.checked == 12 for x in r.results)
    assert [(k, x.failed, x.success) for k, x in by_key.items()] == [
        ("tenure_months:type", 0, True), ("tenure_months:range", 3, False),
        ("tenure_months:nullable", 0, True), ("customer_id:unique", 0, True)]


def test_report_samples_carry_ids(churn_report):
    [range_result] = [x for x in churn_report.results if x.rule == "range"]
    assert range_result.samples == [{"value": -1, "id": "C003"}, {"value": 101, "id": "C006"},
                                    {"value": 250, "id": "C010"}]
    assert all(type(s["value"]) is int and type(s["id"]) is str for s in range_result.samples)


def test_failure_lines(churn_report):
    [line] = churn_report.failure_lines()
    assert line.startswith("column tenure_months: rule range (")
    assert "[0, 100]) failed on 3 of 12 rows" in line
    assert "range (range" not in line          # the rule name is not repeated in its detail
    assert line.endswith("; e.g. C003: -1, C006: 101, C010: 250")


def test_report_to_dict_and_markdown(churn_report):
    d = churn_report.to_dict()
    assert (d["rows"], d["passed_rows"], d["bad_rows"], d["success"]) == (12, 9, 3, False)
    assert d["table_failures"] == []
    assert [(x["rule"], x["failed"], x["success"]) for x in d["results"]] == [
        ("type", 0, True), ("range", 3, False), ("nullable", 0, True), ("unique", 0, True)]
    md = churn_report.to_markdown()
    assert "12 rows: 9 passed, 3 failed." in md
    [row] = [r for r in md.splitlines() if r.startswith("| tenure_months | range |")]
    assert row.endswith("[0, 100] | 12 | 3 |")


def test_report_row_with_two_reasons_counts_once():
    frame = pd.DataFrame({"id": [1, 2, 3], "t": [500.0, 500.0, 5.0]})
    rules = rules_for(E({"column": "t", "range": [0, 100], "unique": True}))
    report = report_from_bad_rows(rules, 3, bad_rows(flag(frame, rules)), "id", [])
    assert report.bad_rows == 2 and report.passed_rows == 1
    assert {x.rule: x.failed for x in report.results} == {"range": 2, "unique": 2}
    assert [s["id"] for s in report.results[0].samples] == [1, 2]


def test_report_without_id_column_and_nan_sample():
    frame = pd.DataFrame({"a": [1.0, np.nan, np.nan]})
    rules = rules_for(E({"column": "a", "nullable": False}))
    report = report_from_bad_rows(rules, 3, bad_rows(flag_batch(frame, rules)), None, [])
    assert report.results[0].samples == [{"value": None}, {"value": None}]
    [line] = report.failure_lines()
    assert line.startswith("column a: rule nullable")
    assert line.endswith("failed on 2 of 3 rows; e.g. None, None")


def test_report_samples_are_capped():
    frame = pd.DataFrame({"id": np.arange(50), "a": np.arange(50) + 5.0})
    rules = rules_for(E({"column": "a", "range": [0, 1]}))
    report = report_from_bad_rows(rules, 50, bad_rows(flag_batch(frame, rules)), "id", [])
    [result] = report.results
    assert result.failed == 50
    assert len(result.samples) == SAMPLE_SIZE == 20
    assert result.samples[:2] == [{"value": 5.0, "id": 0}, {"value": 6.0, "id": 1}]
    assert type(result.samples[0]["id"]) is int
    assert "failed on 50 of 50 rows; e.g. 0: 5.0, 1: 6.0, 2: 7.0" in report.failure_lines()[0]


def test_report_all_passed():
    rules = [Rule("a", "nullable", "not null")]
    report = report_from_bad_rows(rules, 5, pd.DataFrame(columns=["a", REASONS]), None, [])
    assert report.success and report.bad_rows == 0 and report.bad_fraction == 0.0
    assert report.failure_lines() == []
    empty = report_from_bad_rows([], 0, pd.DataFrame(columns=[REASONS]), None, [])
    assert empty.bad_fraction == 0.0 and empty.success


def test_table_failures_fail_the_report():
    report = report_from_bad_rows([], 10, pd.DataFrame(columns=[REASONS]), None, ["table: 10 rows, below min_rows 20"])
    assert report.success is False
    assert report.failure_lines() == ["table: 10 rows, below min_rows 20"]


# --------------------------------------------------------------------------- table checks

SPEC = """\
name: demo
sources:
  - type: files
    path: data/x.csv
target: churned
problem_type: classification
expectations:
  min_rows: 5
  max_rows: 10
  columns:
    - column: tenure_months
      range: [0, 100]
    - column: missing_col
      nullable: false
"""


@pytest.fixture(scope="module")
def spec():
    return parse_spec(SPEC, "spec.yaml", env={}, base_dir="/b")


def test_table_checks_missing_column_names_spec_line(spec):
    line = SPEC.splitlines().index("    - column: missing_col") + 1
    failures = table_checks(spec.expectations, 7, ["customer_id", "tenure_months", "churned"], spec.where)
    assert failures == [f"spec.yaml:{line}: column missing_col is not in the data "
                        f"(columns: customer_id, tenure_months, churned)"]


@pytest.mark.parametrize("rows, expected", [
    (4, ["table: 4 rows, below min_rows 5"]),
    (5, []),
    (10, []),
    (11, ["table: 11 rows, above max_rows 10"]),
    (0, ["table: 0 rows, below min_rows 5"]),
])
def test_table_checks_row_bounds(spec, rows, expected):
    assert table_checks(spec.expectations, rows, ["tenure_months", "missing_col"], spec.where) == expected


def test_table_checks_without_bounds():
    assert table_checks(E({"column": "a"}), 0, ["a"], lambda *p: "x") == []
    assert table_checks(E(min_rows=0), 0, [], lambda *p: "x") == []
