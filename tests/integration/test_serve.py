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


def test_health_ready_and_metadata(served, workspace):
    assert httpx.get(f"{served.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{served.url}/ready").json() == {"ready": True, "variants": {"control": "1"}}
    meta = httpx.get(f"{served.url}/metadata", headers=served.headers).json()
    assert meta["name"] == "churn" and meta["mode"] == "split"
    assert meta["assignment_key"] == "user_id"
    control = meta["variants"]["control"]
    assert control["version"] == "1" and control["family"] in ("logistic_regression", "xgboost", "random_forest")
    import mlflow
    client = mlflow.MlflowClient(workspace.tracking_uri, workspace.tracking_uri)
    assert control["run_id"] == client.get_model_version("churn", "1").run_id
    assert set(control["data_versions"]) == {"raw_data", "processed_data", "feature_store"}
    assert control["test_metrics"]["auc_roc"] >= 0.75
    assert httpx.get(f"{served.url}/metadata").status_code == 401


def test_one_record_gets_a_prediction_with_probabilities(served):
    response = post(served, RECORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["request_id"]) >= 16
    assert body["model"]["version"] == "1"
    [prediction] = body["predictions"]
    assert prediction["variant"] == "control" and prediction["model_version"] == "1"
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


def test_unknown_category_is_scored_and_flagged(served):
    response = post(served, {**RECORD, "payment_method": "crypto"})
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert prediction["warnings"] == ["payment_method: unknown category 'crypto'"]
    assert 0 <= prediction["probabilities"]["1"] <= 1


def test_feedback_is_stored_against_the_request(served, workspace):
    import sqlite3

    request_id = post(served, RECORD).json()["request_id"]
    stored = httpx.post(f"{served.url}/feedback", headers=served.headers, json={
        "request_id": request_id, "label": 1, "conversion": True, "revenue": 42.5, "channel": "email"})
    assert stored.status_code == 201 and stored.json() == {"request_id": request_id, "stored": True}
    unknown = httpx.post(f"{served.url}/feedback", headers=served.headers, json={"request_id": "nope", "label": 0})
    assert unknown.status_code == 404
    with sqlite3.connect(workspace.path / ".rayline" / "serving.db") as db:
        [row] = db.execute("select label, conversion, revenue, extra from feedback where request_id = ?",
                           (request_id,)).fetchall()
        assert row == ("1", 1, 42.5, '{"channel": "email"}')
        logged = db.execute("select model_version, variant from predictions where request_id = ?",
                            (request_id,)).fetchall()
        assert logged == [("1", "control")]


def test_overload_gets_503(served):
    """More concurrent requests than max_ongoing_requests (4) + max_queued_requests (8) admit."""
    import asyncio

    big = [RECORD] * 2000  # each request takes a while, so the queue fills

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            async def one():
                return (await client.post(f"{served.url}/predict", json=big, headers=served.headers)).status_code
            return await asyncio.gather(*(one() for _ in range(48)))

    codes = asyncio.run(burst())
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) > 0 and codes.count(200) > 0, codes
    assert post(served, RECORD).status_code == 200  # and it recovers


def test_serve_build_config_deploys_with_serve_deploy(served, workspace, cluster):
    """`rayline serve build` writes a Serve config that the stock `serve deploy` accepts."""
    import subprocess

    import yaml

    from tests.integration.conftest import BIN, wait_for

    result = workspace.rayline("serve", "build", "spec.yaml", "-o", "serve_config.yaml")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((workspace.path / "serve_config.yaml").read_text())
    app = config["applications"][0]
    assert app["import_path"] == "serve.app:app_builder" and app["args"]["variants"] == {"control": "1"}
    assert "test-key" not in (workspace.path / "serve_config.yaml").read_text()  # secrets stay ${VAR}
    # `serve deploy` declares every application of the cluster: the file keeps the app
    # `rayline serve` runs and adds a second one from the same config at another prefix.
    # The second app also scores inside its ingress (`placement: ingress`): no model deployment.
    spec_text = app["args"]["spec_text"]
    assert "    port: 8000\n" in spec_text
    second = {**app, "name": "churn-deployed", "route_prefix": "/deployed",
              "args": {**app["args"], "spec_text": spec_text.replace(
                  "    port: 8000\n", "    port: 8000\n    placement: ingress\n")}}
    config["applications"] = [app, second]
    config["http_options"]["port"] = int(served.url.rsplit(":", 1)[1])
    (workspace.path / "deployed.yaml").write_text(yaml.safe_dump(config))

    def serve_deploy(path: str) -> None:
        done = subprocess.run([str(BIN / "serve"), "deploy", path, "--address", cluster.dashboard],
                              cwd=workspace.path, env=workspace.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    serve_deploy("deployed.yaml")
    try:
        wait_for(f"{served.url}/deployed/ready", 180)
        records = [RECORD, {**RECORD, "tenure_months": 40, "contract": "two_year"},
                   {**RECORD, "payment_method": "crypto"}]
        response = httpx.post(f"{served.url}/deployed/predict", json=records, headers=served.headers, timeout=30)
        assert response.status_code == 200, response.text
        in_ingress = response.json()["predictions"]
        assert [p["model_version"] for p in in_ingress] == ["1", "1", "1"]
        first = post(served, records)  # the first app kept serving, and both score alike
        assert first.status_code == 200
        assert [(p["prediction"], p["probabilities"], p.get("warnings")) for p in in_ingress] == \
               [(p["prediction"], p["probabilities"], p.get("warnings")) for p in first.json()["predictions"]]
        status = subprocess.run([str(BIN / "serve"), "status", "--address", cluster.dashboard],
                                env=workspace.env, capture_output=True, text=True, timeout=60)
        deployed = yaml.safe_load(status.stdout)["applications"]["churn-deployed"]["deployments"]
        assert set(deployed) == {"ingress"}, deployed
    finally:
        config["applications"] = [app]
        (workspace.path / "deployed.yaml").write_text(yaml.safe_dump(config))
        serve_deploy("deployed.yaml")
