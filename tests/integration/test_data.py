"""The data workload through its entry points: quarantine, `rayline validate`, Delta versions,
`--data-version`, and the FeaturePipeline on Ray Data batches vs single records."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import EXAMPLE, Workspace

pytestmark = pytest.mark.integration

FAST = "baseline_models: [logistic_regression]"


@pytest.fixture(scope="module")
def data_workspace(tmp_path_factory, cluster) -> Workspace:
    """Its own store (MLflow, Delta tables), so versions here are not mixed with other tests'."""
    path = tmp_path_factory.mktemp("data")
    subprocess.run([sys.executable, str(EXAMPLE / "generate_data.py"), "--out", str(path / "in"),
                    "--bad-rows", "100"], check=True, capture_output=True)
    return Workspace(path=path, spec=path / "spec.yaml", env=cluster.env)


def write_spec(ws: Workspace, name: str, *, csv: str, on_failure: str = "fail",
               max_bad: float = 0.0, extra: str = "") -> str:
    text = (EXAMPLE / "spec.yaml").read_text()
    text = text.replace("examples/churn/data/customers.csv", str(ws.path / "in" / csv))
    text = text.replace("baseline_models: [logistic_regression, random_forest, xgboost]", FAST)
    text = text.replace("  on_failure: fail\n", f"  on_failure: {on_failure}\n  max_bad_fraction: {max_bad}\n")
    (ws.path / name).write_text(text + extra)
    return name


def registered_versions(ws: Workspace) -> list[str]:
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(ws.tracking_uri, ws.tracking_uri)
    try:
        return sorted(str(v.version) for v in client.search_model_versions("name='churn'"))
    except MlflowException:
        return []


def bad_ids(ws: Workspace) -> set[str]:
    good = pd.read_csv(ws.path / "in" / "customers.csv")
    bad = pd.read_csv(ws.path / "in" / "customers_bad.csv")
    changed = good["tenure_months"].to_numpy() != bad["tenure_months"].to_numpy()
    return set(bad.loc[changed, "customer_id"])


def test_two_percent_bad_rows_are_quarantined_and_the_run_completes(data_workspace):
    ws = data_workspace
    spec = write_spec(ws, "quarantine.yaml", csv="customers_bad.csv", on_failure="quarantine", max_bad=0.05)
    result = ws.rayline("run", spec)
    assert result.returncode == 0, result.stderr
    assert "4,900 passed, 100 quarantined" in result.stderr
    from deltalake import DeltaTable

    quarantine = DeltaTable(str(ws.path / ".rayline" / "data" / "churn" / "quarantine")).to_pandas()
    assert len(quarantine) == 100
    assert set(quarantine["customer_id"]) == bad_ids(ws)
    assert set(quarantine["_reasons"]) == {"tenure_months:range"}
    assert quarantine["_run_id"].nunique() == 1
    processed = DeltaTable(str(ws.path / ".rayline" / "data" / "churn" / "processed_data")).to_pandas()
    assert len(processed) == 4_900 and not set(processed["customer_id"]) & bad_ids(ws)
    assert registered_versions(ws) == ["1"]

    import mlflow
    client = mlflow.MlflowClient(ws.tracking_uri, ws.tracking_uri)
    run_id = quarantine["_run_id"].iloc[0]
    files = {f.path for f in client.list_artifacts(run_id, "validation")}
    assert {"validation/report.json", "validation/report.md", "validation/report.html",
            "validation/quarantine.parquet"} <= files
    params = client.get_run(run_id).data.params
    assert params["data.raw_data.rows"] == "5000" and params["data.processed_data.rows"] == "4900"


def test_above_max_bad_fraction_fails_clearly_and_registers_nothing(data_workspace):
    ws = data_workspace
    before = registered_versions(ws)
    spec = write_spec(ws, "strict.yaml", csv="customers_bad.csv", on_failure="quarantine", max_bad=0.01)
    result = ws.rayline("run", spec)
    assert result.returncode == 1, result.stderr
    assert "100 of 5000 rows (2.00%) are bad, above max_bad_fraction 1.00%" in result.stderr
    assert "column tenure_months: rule range ([0, 100]) failed on 100 of 5000 rows" in result.stderr
    assert registered_versions(ws) == before


def test_rayline_validate_reports_without_training(data_workspace):
    ws = data_workspace
    spec = write_spec(ws, "validate.yaml", csv="customers_bad.csv", on_failure="quarantine", max_bad=0.05)
    before = registered_versions(ws)
    result = ws.rayline("validate", spec)
    assert result.returncode == 0, result.stderr
    assert "5,000 rows: 4,900 passed, 100 quarantined" in " ".join(result.stdout.split())
    assert "Train" not in result.stderr
    assert registered_versions(ws) == before
    failing = ws.rayline("validate", write_spec(ws, "validate-fail.yaml", csv="customers_bad.csv"))
    assert failing.returncode == 1
    assert "failed on 100 of 5000 rows" in failing.stderr


def test_a_pinned_data_version_reproduces_the_feature_hash(data_workspace):
    import mlflow

    ws = data_workspace
    spec = write_spec(ws, "clean.yaml", csv="customers.csv")
    first = ws.rayline("run", spec)
    assert first.returncode == 0, first.stderr
    listing = ws.rayline("data", "versions", spec)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split("│") for line in listing.stdout.splitlines() if line.startswith("│")]
    raw_versions = sorted(int(r[2]) for r in rows if r[1].strip().startswith("raw_data"))
    assert raw_versions, listing.stdout
    latest_raw = raw_versions[-1]

    again = ws.rayline("run", spec, "--data-version", str(latest_raw))
    assert again.returncode == 0, again.stderr
    assert f"from raw_data version {latest_raw}" in again.stderr

    client = mlflow.MlflowClient(ws.tracking_uri, ws.tracking_uri)
    experiment = client.get_experiment_by_name("churn")
    runs = client.search_runs([experiment.experiment_id], "params.`data.feature_store.hash` != ''",
                              order_by=["attributes.start_time DESC"], max_results=2)
    newest, previous = runs[0].data.params, runs[1].data.params
    assert newest["data.raw_data.pinned_version"] == str(latest_raw)
    assert newest["data.feature_store.hash"] == previous["data.feature_store.hash"]
    assert int(newest["data.feature_store.version"]) == int(previous["data.feature_store.version"]) + 1

    missing = ws.rayline("run", spec, "--data-version", "999")
    assert missing.returncode == 1 and "there is no version 999" in missing.stderr


def test_rayline_features_shows_the_fitted_pipeline(data_workspace):
    ws = data_workspace
    result = ws.rayline("features", "clean.yaml")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "standard_scaler" in text and "one_hot" in text and "auto_impute" in text
    assert "-> 17 features" in text and "contract=two_year" in text


def test_features_on_ray_data_batches_equal_single_records(cluster, monkeypatch):
    """The offline path (Ray Data map_batches) and the online path (one JSON record at a time)
    give identical numbers on 1,000 records, nulls and unknown categories included."""
    import ray

    from pipeline.features import FeaturePipeline
    from pipeline.predictor import column_kind
    from pipeline.spec import load_spec

    spec = load_spec(EXAMPLE / "spec.yaml")
    frame = pd.read_csv(EXAMPLE / "data" / "customers.csv")
    inputs = [c for c in frame.columns if c not in ("churned", "customer_id", "signup_date", "user_id")]
    pipeline = FeaturePipeline.from_spec(spec.transformations, inputs,
                                         {c: column_kind(frame[c]) for c in frame.columns}).fit(frame.iloc[:3500])
    sample = frame.iloc[3500:4500].copy()
    sample.loc[sample.index[::50], "contract"] = "weekly"            # unknown category
    sample.loc[sample.index[::70], "tenure_months"] = 0              # division by zero
    sample = sample.astype({"tenure_months": "float64"})
    sample.loc[sample.index[::90], "tenure_months"] = np.nan         # null

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address=cluster.address, ignore_reinit_error=True, log_to_driver=False)
    try:
        ds = ray.data.from_pandas(sample, override_num_blocks=7)
        offline = ds.map_batches(pipeline.transform, batch_format="pandas").to_pandas()
    finally:
        ray.shutdown()
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()}
               for r in sample[pipeline.required_columns].to_dict(orient="records")]
    online = np.vstack([pipeline.transform_records([r]) for r in records])
    assert offline.shape == (1000, len(pipeline.output_columns))
    assert np.array_equal(offline.to_numpy(dtype=np.float64), online)
