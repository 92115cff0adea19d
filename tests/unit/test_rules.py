"""pipeline.rules: one column's input rules, from the spec, into a model's schema.json and back, and
compiled three ways (validation's GE suite, serving's request model, batch scoring's row checks)
with each entry point judging the same value the same way where they agree. No Ray."""

# No `from __future__ import annotations`: FastAPI must see the record model class itself.
import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pipeline.predictor import FieldSpec, InputSchema, infer_schema
from pipeline.rules import ColumnRules
from pipeline.rules.suite import checks
from pipeline.scoring import reason_of, row_errors
from pipeline.spec import Expectations
from pipeline.validation import REASONS, batch_reasons, flag_batch, rules_for
from serve.schemas import record_model

EXPECT = Expectations(columns=[
    {"column": "tenure", "type": "numeric", "range": [0, 100], "nullable": False},
    {"column": "contract", "values": ["monthly", "yearly"], "nullable": False},
    {"column": "customer_id", "unique": True, "regex": r"^C\d+$"},
])
TRAIN = pd.DataFrame({"tenure": [1.0, 50.0], "contract": ["monthly", "yearly"],
                      "paperless": [True, False], "customer_id": ["C1", "C2"]})
GOOD = {"tenure": 3, "contract": "monthly", "paperless": True}


@pytest.fixture(scope="module")
def schema() -> InputSchema:
    return infer_schema(TRAIN, ["tenure", "contract", "paperless"], EXPECT)


# --------------------------------------------------------------------------- the model

def test_a_spec_expectation_maps_onto_one_column_rules():
    tenure, contract, ident = (ColumnRules.from_expectation(c) for c in EXPECT.columns)
    assert tenure == ColumnRules("tenure", "numeric", nullable=False, minimum=0, maximum=100)
    assert contract == ColumnRules("contract", None, nullable=False, values=["monthly", "yearly"])
    assert ident == ColumnRules("customer_id", None, unique=True, regex=r"^C\d+$")
    [nullable_true, nothing] = Expectations(columns=[{"column": "a", "nullable": True},
                                                     {"column": "b"}]).columns
    assert ColumnRules.from_expectation(nullable_true) == ColumnRules("a", None)
    assert ColumnRules.from_expectation(nothing) == ColumnRules("b", None)


def test_an_unbounded_range_is_no_rule():
    # It used to become a GE between with no bound, which GE refuses when it builds the suite.
    [col] = Expectations(columns=[{"column": "t", "range": [None, None]}]).columns
    rules = ColumnRules.from_expectation(col)
    assert not rules.has_range and list(checks(rules)) == []
    assert flag_batch(pd.DataFrame({"t": [1.0, 500.0]}), rules_for(Expectations(columns=[col])))[
        REASONS].tolist() == ["", ""]


def test_the_schema_is_the_spec_rules_with_the_data_kind_and_examples(schema):
    tenure, contract, paperless = schema.fields
    assert tenure == FieldSpec("tenure", "numeric", nullable=False, minimum=0, maximum=100, examples=[1.0])
    assert contract == FieldSpec("contract", "categorical", nullable=False, values=["monthly", "yearly"],
                                 examples=["monthly"])
    assert paperless == FieldSpec("paperless", "boolean", examples=[True])
    assert isinstance(tenure, ColumnRules)
    # unique and regex stay with validation: serving has never applied them
    ident = infer_schema(TRAIN, ["customer_id"], EXPECT).fields[0]
    assert (ident.unique, ident.regex) == (False, None)


# What Predictor.save wrote before the rule model: every registered model has one like it.
OLD_SCHEMA_JSON = """{
  "fields": [
    {"name": "tenure_months", "kind": "numeric", "nullable": false, "minimum": 0.0, "maximum": 100.0,
     "values": null, "examples": [12]},
    {"name": "contract", "kind": "categorical", "nullable": false, "minimum": null, "maximum": null,
     "values": ["month-to-month", "one_year"], "examples": ["one_year"]},
    {"name": "senior", "kind": "numeric", "nullable": true, "minimum": null, "maximum": null,
     "values": [0, 1], "examples": [0]},
    {"name": "paperless", "kind": "boolean", "nullable": true, "minimum": null, "maximum": null,
     "values": null, "examples": []}
  ]
}"""


def test_a_schema_json_written_before_the_rule_model_still_loads():
    data = json.loads(OLD_SCHEMA_JSON)
    schema = InputSchema.from_dict(data)
    assert [f.name for f in schema.fields] == ["tenure_months", "contract", "senior", "paperless"]
    tenure = schema.fields[0]
    assert (tenure.kind, tenure.nullable, tenure.minimum, tenure.maximum, tenure.examples) == (
        "numeric", False, 0.0, 100.0, [12])
    assert (tenure.unique, tenure.regex) == (False, None)
    assert schema.fields[1].values == ["month-to-month", "one_year"]
    assert schema.example() == {"tenure_months": 12, "contract": "one_year", "senior": 0, "paperless": None}
    # ... and is written back in the same layout, so older code reads what this code writes
    assert schema.to_dict() == data
    assert [list(f) for f in schema.to_dict()["fields"]] == [list(f) for f in data["fields"]]
    Record = record_model(schema, "churn")
    with pytest.raises(ValidationError):
        Record.model_validate({"tenure_months": 101, "contract": "one_year", "senior": 0, "paperless": None})
    frame = pd.DataFrame({"tenure_months": [101], "contract": ["one_year"], "senior": [0],
                          "paperless": [None]})
    assert list(row_errors(frame, schema)) == ["tenure_months: outside [0, 100] (101)"]


def test_a_schema_with_the_newer_facts_round_trips():
    schema = InputSchema([FieldSpec("id", "categorical", unique=True, regex="^C", examples=["C1"])])
    data = schema.to_dict()
    assert data["fields"][0]["unique"] is True and data["fields"][0]["regex"] == "^C"
    assert InputSchema.from_dict(json.loads(json.dumps(data))) == schema


# --------------------------------------------------------------------------- three compilers, one rule

def _request_errors(schema: InputSchema, record: dict) -> list[dict]:
    try:
        record_model(schema, "churn").model_validate(record)
    except ValidationError as exc:
        return exc.errors()
    return []


def _validation_reasons(frame: pd.DataFrame) -> list[str]:
    rules = [r for r in rules_for(EXPECT) if r.column in frame.columns and r.rule != "unique"]
    return list(batch_reasons(frame, rules))


def test_a_value_outside_the_range_is_refused_by_all_three(schema):
    [error] = _request_errors(schema, dict(GOOD, tenure=150))
    assert (error["loc"], error["type"]) == (("tenure",), "less_than_equal")
    frame = pd.DataFrame([GOOD, dict(GOOD, tenure=150)])
    [ok, bad] = row_errors(frame, schema)
    assert ok is None and bad == "tenure: outside [0, 100] (150)"
    assert reason_of(bad) == "tenure: outside [0, 100]"
    assert _validation_reasons(frame) == ["", "tenure:range"]
    rules = [r for r in rules_for(EXPECT) if r.column in frame.columns]
    assert flag_batch(frame, rules)[REASONS].tolist() == ["", "tenure:range"]


def test_the_range_is_inclusive_everywhere(schema):
    frame = pd.DataFrame([dict(GOOD, tenure=0), dict(GOOD, tenure=100)])
    assert _request_errors(schema, dict(GOOD, tenure=0)) == _request_errors(schema, dict(GOOD, tenure=100)) == []
    assert list(row_errors(frame, schema)) == [None, None]
    assert _validation_reasons(frame) == ["", ""]


def test_a_null_where_none_is_allowed_is_refused_by_all_three(schema):
    [error] = _request_errors(schema, dict(GOOD, contract=None))
    assert error["loc"] == ("contract",)
    frame = pd.DataFrame([dict(GOOD, contract=None)])
    assert list(row_errors(frame, schema)) == ["contract: null not allowed"]
    assert _validation_reasons(frame) == ["contract:nullable"]


def test_a_value_not_in_the_list_is_refused_by_all_three(schema):
    [error] = _request_errors(schema, dict(GOOD, contract="weekly"))
    assert (error["loc"], error["type"]) == (("contract",), "literal_error")
    frame = pd.DataFrame([dict(GOOD, contract="weekly")])
    assert list(row_errors(frame, schema)) == ["contract: not one of ['monthly', 'yearly'] ('weekly')"]
    assert _validation_reasons(frame) == ["contract:values"]


def test_text_that_is_not_a_number_is_refused_by_all_three(schema):
    [error] = _request_errors(schema, dict(GOOD, tenure="abc"))
    assert (error["loc"], error["type"]) == (("tenure",), "float_type")
    frame = pd.DataFrame([dict(GOOD, tenure="abc")])
    assert list(row_errors(frame, schema)) == ["tenure: not a number ('abc')"]
    # validation reads it as a number first (so as null for the nullable rule too: the range
    # rule's numbers are the column GE sees)
    assert _validation_reasons(frame) == ["tenure:type;tenure:range;tenure:nullable"]


def test_where_the_entry_points_differ_on_purpose(schema):
    # A number as text: JSON carries types, so the request refuses it; a CSV carries text.
    assert _request_errors(schema, dict(GOOD, tenure="12"))[0]["type"] == "float_type"
    assert list(row_errors(pd.DataFrame([dict(GOOD, tenure="12")]), schema)) == [None]
    # A value list replaces the range for one record, while validation checks both.
    rules = ColumnRules("n", "numeric", minimum=0, maximum=10, values=[0, 50])
    fifty = InputSchema([FieldSpec.of(rules, [])])
    assert _request_errors(fifty, {"n": 50}) == []
    assert list(row_errors(pd.DataFrame({"n": [50]}), fifty)) == [None]
    assert list(batch_reasons(pd.DataFrame({"n": [50]}), list(checks(rules)))) == ["n:range"]


@pytest.mark.filterwarnings("ignore:Using .httpx. with .starlette.testclient.")
def test_the_request_model_answers_422_naming_the_field(schema):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    Record = record_model(schema, "churn")
    app = FastAPI()

    @app.post("/predict")
    def predict(record: Record) -> dict:  # type: ignore[valid-type]
        return {"ok": True}

    client = TestClient(app)
    assert client.post("/predict", json=GOOD).status_code == 200
    response = client.post("/predict", json=dict(GOOD, tenure=150))
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["loc"][-1] == "tenure" and detail["type"] == "less_than_equal"


def test_row_checks_handle_arrow_backed_and_nullable_columns(schema):
    frame = pd.DataFrame({"tenure": pd.array([5, None, 150], dtype="Int64"),
                          "contract": pd.array(["monthly", "yearly", "weekly"], dtype="string"),
                          "paperless": [True, False, True]})
    assert list(row_errors(frame, schema)) == [
        None, "tenure: null not allowed",
        "tenure: outside [0, 100] (150); contract: not one of ['monthly', 'yearly'] ('weekly')"]
    assert _validation_reasons(frame) == ["", "tenure:nullable", "tenure:range;contract:values"]
    assert np.all(_validation_reasons(frame.iloc[:1]) == np.array([""]))
