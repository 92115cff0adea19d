"""`rayline run` on the churn example, and what it leaves in MLflow."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.integration.conftest import API_KEY, BIN, EXAMPLE, free_port, wait_for

pytestmark = pytest.mark.integration


def _client(workspace):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=workspace.tracking_uri, registry_uri=workspace.tracking_uri)


def _versions(workspace) -> list[str]:
    from mlflow.exceptions import MlflowException

    try:
        return [v.version for v in _client(workspace).search_model_versions("name='churn'")]
    except MlflowException:
        return []


def test_run_reports_every_stage_and_the_champion(trained):
    for stage in ("Ray", "Ingest", "Version raw_data", "Validate", "Version processed_data", "Split",
                  "Features", "Version feature_store", "Train", "Evaluate", "Register"):
        assert f"✓ {stage}" in trained.stderr, trained.stderr
    assert "5,000 rows" in trained.stderr
    assert "train 3,500 / validation 750 / test 750" in trained.stderr
    assert "Leaderboard" in trained.stderr and "★" in trained.stderr
    assert "training plan:" in trained.stderr
    assert "churn v1" in trained.stdout and "@champion" in trained.stdout


def test_mlflow_run_holds_params_metrics_spec_and_model(workspace, trained):
    client = _client(workspace)
    version = client.get_model_version_by_alias("churn", "champion")
    run = client.get_run(version.run_id)
    assert run.data.params["seed"] == "42"
    assert run.data.params["problem_type"] == "classification"
    assert run.data.params["models"] == "logistic_regression,random_forest,xgboost"
    metrics = run.data.metrics
    assert metrics["data_rows"] == 5000 and metrics["rows_train"] == 3500
    for name in ("accuracy", "precision", "recall", "f1_score", "auc_roc", "cost_weighted_error",
                 "retention_value"):
        assert f"val_{name}" in metrics and f"test_{name}" in metrics, name
    assert metrics["test_auc_roc"] >= 0.75  # the spec's threshold, met or nothing would be registered
    assert "test_tp" in metrics and "latency_p50_ms" in metrics

    spec_text = client.download_artifacts(run.info.run_id, "spec/spec.yaml")
    spec_text = open(spec_text).read()
    assert "${PREDICT_API_KEY}" in spec_text and API_KEY not in spec_text

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"spec", "validation", "features", "leaderboard.json"} <= artifacts
    board = json.load(open(client.download_artifacts(run.info.run_id, "leaderboard.json")))
    assert {row["model"] for row in board} == {"logistic_regression", "random_forest", "xgboost"}
    assert sum(row["champion"] for row in board) == 1

    diagnostics = {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"confusion_matrix.png", "confusion_matrix.json", "roc_curve.png", "roc_curve.json",
            "pr_curve.png", "pr_curve.json", "slices.json"} <= diagnostics
    slices = json.load(open(client.download_artifacts(run.info.run_id, "evaluation/slices.json")))
    assert set(slices["contract"]) == {"month-to-month", "one_year", "two_year"}
    assert sum(v["n"] for v in slices["contract"].values()) == 750  # the test split
    assert all("auc_roc" in v for v in slices["senior_citizen"].values())

    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert {c.info.run_name for c in children} == {"logistic_regression", "random_forest", "xgboost"}


def test_registered_model_loads_with_mlflow_pyfunc(workspace, trained):
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(workspace.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    frame = pd.read_csv(EXAMPLE / "data" / "customers.csv").head(50)
    out = model.predict(frame)
    assert len(out) == 50
    assert set(out["prediction"].unique()) <= {0, 1}
    assert ((out["probability_0"] + out["probability_1"]).round(6) == 1).all()


def test_mlflow_ui_shows_the_run(workspace, trained, tmp_path):
    port = free_port()
    proc = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", workspace.tracking_uri,
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", 120, proc)
        experiment = httpx.get(f"{base}/api/2.0/mlflow/experiments/get-by-name",
                               params={"experiment_name": "churn"}).json()["experiment"]
        runs = httpx.post(f"{base}/api/2.0/mlflow/runs/search",
                          json={"experiment_ids": [experiment["experiment_id"]],
                                "filter": "tags.rayline.registered LIKE 'churn%'"}).json()["runs"]
        assert runs, "the registered run is not listed"
        run_id = runs[0]["info"]["run_id"]
        listed = httpx.get(f"{base}/api/2.0/mlflow/artifacts/list", params={"run_id": run_id}).json()
        assert "spec" in {f["path"] for f in listed["files"]}
        spec = httpx.get(f"{base}/get-artifact", params={"path": "spec/spec.yaml", "run_uuid": run_id})
        assert spec.status_code == 200 and "name: churn" in spec.text
        assert httpx.get(base).status_code == 200  # the UI page itself
    finally:
        proc.terminate()
        proc.wait(30)


def test_three_out_of_range_rows_fail_the_run_with_a_report(workspace, trained):
    data = workspace.path / "bad"
    subprocess.run([sys.executable, str(EXAMPLE / "generate_data.py"), "--out", str(data),
                    "--bad-rows", "3"], check=True, capture_output=True)
    spec = workspace.path / "bad.yaml"
    spec.write_text(workspace.spec.read_text().replace(
        "examples/churn/data/customers.csv", str(data / "customers_bad.csv")))
    before = _versions(workspace)
    result = workspace.rayline("run", "bad.yaml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "data validation failed" in result.stderr
    assert "column tenure_months: rule range ([0, 100]) failed on 3 of 5000 rows" in result.stderr
    assert _versions(workspace) == before  # nothing registered


def test_threshold_refusal_through_ray_job_submit(workspace, cluster, trained):
    spec = workspace.path / "strict.yaml"
    text = workspace.spec.read_text()
    text = text.replace("baseline_models: [logistic_regression, random_forest, xgboost]",
                        "baseline_models: [logistic_regression]")
    text = text.replace("    auc_roc: 0.75", "    auc_roc: 0.99")
    text = text.replace("sqlite:///.rayline/mlflow.db", workspace.tracking_uri)
    spec.write_text(text)
    before = _versions(workspace)
    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard,
         "--working-dir", str(workspace.path),
         "--runtime-env-json", json.dumps({"excludes": [".rayline", "bad", "*.log"],
                                           "env_vars": {"PREDICT_API_KEY": API_KEY}}),
         "--", "python", "-m", "jobs.train", "--spec", "strict.yaml"],
        env=workspace.env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "auc_roc" in output and "below the threshold 0.99" in output, output
    assert _versions(workspace) == before
