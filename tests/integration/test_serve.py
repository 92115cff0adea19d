"""HTTP against the app `rayline serve` runs on Ray Serve."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from tests.integration.conftest import EXAMPLE

pytestmark = pytest.mark.integration

RECORD = {"customer_id": "C900001", "tenure_months": 3, "monthly_charges": 89.5,
          "total_charges": 268.5, "contract": "month-to-month", "payment_method": "electronic_check",
          "internet_service": "fiber_optic", "senior_citizen": 0, "num_support_calls": 4}


def post(served, body, **kw):
    return httpx.post(f"{served.url}/predict", json=body, headers=served.headers, timeout=30, **kw)


def test_health_names_the_model(served):
    body = httpx.get(f"{served.url}/health").json()
    assert body["status"] == "ok"
    assert body["model"]["name"] == "churn" and body["model"]["version"] == "1"


def test_one_record_gets_a_prediction_with_probabilities(served):
    response = post(served, RECORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["request_id"]) >= 16
    assert body["model"]["version"] == "1"
    [prediction] = body["predictions"]
    assert prediction["prediction"] in (0, 1)
    assert set(prediction["probabilities"]) == {"0", "1"}
    assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-6
    assert prediction["id"] == "C900001"


def test_a_list_of_records_with_nulls_where_allowed(served):
    records = [RECORD, {**RECORD, "customer_id": "C900002", "total_charges": None,
                        "payment_method": None}, {**RECORD, "tenure_months": 60, "contract": "two_year"}]
    response = post(served, records)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    # A long two-year contract is far less likely to churn than a new month-to-month one.
    assert predictions[2]["probabilities"]["1"] < predictions[0]["probabilities"]["1"]


def test_http_predictions_match_the_registered_model(served, workspace):
    import mlflow

    frame = pd.read_csv(EXAMPLE / "data" / "customers.csv").head(40)
    records = [{k: (None if pd.isna(v) else v) for k, v in row.items()}
               for row in frame.to_dict(orient="records")]
    over_http = post(served, records).json()["predictions"]
    mlflow.set_tracking_uri(workspace.tracking_uri)
    local = mlflow.pyfunc.load_model("models:/churn@champion").predict(frame)
    for got, want in zip(over_http, local.to_dict(orient="records")):
        assert got["prediction"] == want["prediction"]
        assert abs(got["probabilities"]["1"] - want["probability_1"]) < 1e-9


@pytest.mark.parametrize("change, field, kind", [
    ({"tenure_months": "abc"}, "tenure_months", "float_type"),
    ({"contract": 3}, "contract", "literal_error"),
    ({"contract": "weekly"}, "contract", "literal_error"),
    ({"tenure_months": 150}, "tenure_months", "less_than_equal"),
    ({"tenure_months": None}, "tenure_months", "float_type"),
    ({"payment_method": 7}, "payment_method", "string_type"),
])
def test_bad_values_get_422_naming_the_field(served, change, field, kind):
    response = post(served, {**RECORD, **change})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [(d["field"], d["type"]) for d in detail] == [(field, kind)], detail


def test_missing_field_gets_422_naming_it(served):
    record = {k: v for k, v in RECORD.items() if k != "monthly_charges"}
    response = post(served, [RECORD, record])
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["field"] == "monthly_charges" and detail["type"] == "missing"
    assert detail["loc"] == ["body", 1, "monthly_charges"]


def test_api_key_is_required_except_for_health(served):
    assert httpx.post(f"{served.url}/predict", json=RECORD).status_code == 401
    assert httpx.post(f"{served.url}/predict", json=RECORD,
                      headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.get(f"{served.url}/health").status_code == 200


def test_oversized_body_gets_413(served):
    response = httpx.post(f"{served.url}/predict", content=b" " * 10_000_001,
                          headers={**served.headers, "content-type": "application/json"})
    assert response.status_code == 413


def test_openapi_document_is_valid_and_typed(served):
    from openapi_spec_validator import validate

    document = httpx.get(f"{served.url}/openapi.json").json()
    validate(document)
    post_op = document["paths"]["/predict"]["post"]
    assert "requestBody" in post_op and "200" in post_op["responses"]
    record = document["components"]["schemas"]["ChurnRecord"]
    assert "tenure_months" in record["required"]
    docs = httpx.get(f"{served.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
