"""Batch scoring on the shared cluster: `python -m jobs.batch_score` through `ray job submit`, and
`rayline score`, against churn v1 @champion; what they write, row for row."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import API_KEY, BIN, EXAMPLE

pytestmark = pytest.mark.integration

BAD = {  # row -> (column, value, the reason the output must give)
    3: ("tenure_months", None, "tenure_months: null not allowed"),
    7: ("contract", "weekly", "contract: not one of"),
    11: ("monthly_charges", 999.0, "monthly_charges: outside [0"),
    12: ("monthly_charges", "abc", "monthly_charges: not a number ('abc')"),
}


def _client(workspace):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=workspace.tracking_uri, registry_uri=workspace.tracking_uri)


def _predictor(workspace, tmp_path):
    import mlflow

    from pipeline.predictor import Predictor, find_predictor_dir

    mlflow.set_tracking_uri(workspace.tracking_uri)
    path = mlflow.artifacts.download_artifacts(artifact_uri="models:/churn/1", dst_path=str(tmp_path))
    return Predictor.load(find_predictor_dir(path))


def _scoring_input(workspace) -> tuple[str, pd.DataFrame]:
    """Two CSV files under score/ (a glob): 1,200 good rows, then 400 rows of which four are bad.
    The second file's monthly_charges holds 'abc', so it is a text column there and a number
    column in the first: the files do not even agree on types."""
    folder = workspace.path / "score"
    folder.mkdir(exist_ok=True)
    frame = pd.read_csv(EXAMPLE / "data" / "customers.csv").drop(columns=["churned"]).head(1600)
    first, second = frame.iloc[:1200].copy(), frame.iloc[1200:].reset_index(drop=True)
    second["monthly_charges"] = second["monthly_charges"].astype(object)
    for row, (column, value, _) in BAD.items():
        second.loc[row, column] = value
    first.to_csv(folder / "part-1.csv", index=False)
    second.to_csv(folder / "part-2.csv", index=False)
    return str(folder / "part-*.csv"), pd.concat([first, second], ignore_index=True)


def _spec(workspace, name: str, batch: str) -> str:
    text = workspace.spec.read_text().replace("sqlite:///.rayline/mlflow.db", workspace.tracking_uri)
    marker = "serving_options:\n"
    assert marker in text
    (workspace.path / name).write_text(text.replace(marker, marker + batch))
    return name


def _only_folder(parent):
    folders = [p for p in parent.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def test_batch_score_job_through_ray_job_submit(workspace, cluster, trained, tmp_path):
    pattern, inputs = _scoring_input(workspace)
    output = workspace.path / "scores"
    spec = _spec(workspace, "batch.yaml", f"  - name: batch\n    input: {pattern}\n"
                                          f"    output: {output}\n    frequency: daily\n")
    command = [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard,
               "--working-dir", str(workspace.path),
               "--runtime-env-json", json.dumps({"excludes": [".rayline", "bad", "scores*", "*.log"],
                                                 "env_vars": {"PREDICT_API_KEY": API_KEY}}),
               "--", "python", "-m", "jobs.batch_score", "--spec", spec, "--model", "champion"]
    for attempt in range(6):
        result = subprocess.run(command, env=workspace.env, capture_output=True, text=True, timeout=600)
        log = result.stdout + result.stderr
        # a fresh head's job agent registers some seconds after the dashboard answers
        if "No available agent to submit job" not in log:
            break
        time.sleep(10)
    assert result.returncode == 0, log
    assert "scored 1,600 rows with churn v1" in log and "rows/s" in log, log
    assert f"errors: {len(BAD)} row(s)" in log, log

    folder = _only_folder(output)
    assert folder.name.startswith("churn-v1-") and folder.name in log
    scored = pd.read_parquet(folder)
    # one row per input row, ids intact, nothing dropped or doubled
    assert len(scored) == len(inputs)
    assert sorted(scored["customer_id"]) == sorted(inputs["customer_id"])
    assert set(scored.columns) >= {"customer_id", "prediction", "probability_0", "probability_1",
                                   "model_name", "model_version", "scored_at", "score_run_id", "error"}
    assert (scored["model_name"] == "churn").all() and (scored["model_version"] == "1").all()
    assert scored["scored_at"].nunique() == 1 and scored["score_run_id"].nunique() == 1

    scored = scored.set_index("customer_id").loc[inputs["customer_id"]]
    bad_ids = [inputs.loc[1200 + row, "customer_id"] for row in BAD]
    for customer, (_, _, reason) in zip(bad_ids, BAD.values()):
        assert scored.loc[customer, "error"].startswith(reason), scored.loc[customer, "error"]
        assert pd.isna(scored.loc[customer, "prediction"])
        assert pd.isna(scored.loc[customer, "probability_1"])
    good = ~inputs["customer_id"].isin(bad_ids).to_numpy()
    assert scored["error"].isna().to_numpy()[good].all()

    # the same rows through the registered model, loaded with MLflow here, give the same answers
    predictor = _predictor(workspace, tmp_path)
    parts = [pd.read_csv(workspace.path / "score" / f"part-{i}.csv") for i in (1, 2)]
    expected = pd.concat([predictor.predict_frame(part[~part["customer_id"].isin(bad_ids)])
                          for part in parts], ignore_index=True)
    np.testing.assert_array_equal(scored["prediction"].to_numpy()[good].astype(int),
                                  expected["prediction"].to_numpy().astype(int))
    for column in ("probability_0", "probability_1"):
        np.testing.assert_allclose(scored[column].to_numpy()[good], expected[column].to_numpy(),
                                   rtol=0, atol=1e-12)

    # traceable: an MLflow run tagged batch_score with what it did
    run = _client(workspace).get_run(scored["score_run_id"].iloc[0])
    assert run.data.tags["rayline.kind"] == "batch_score"
    assert run.data.tags["rayline.model_version"] == "1"
    assert run.data.tags["rayline.output"] == str(folder)
    assert run.data.metrics["rows"] == len(inputs) and run.data.metrics["errors"] == len(BAD)
    assert run.data.metrics["duration_s"] > 0


def test_rayline_score_from_the_spec_sources_into_delta(workspace, trained):
    table = workspace.path / "scores_delta"
    spec = _spec(workspace, "batch_delta.yaml", f"  - name: batch\n    output: {table}\n"
                                                "    format: delta\n    model: '1'\n"
                                                "    passthrough: [contract]\n")
    result = workspace.rayline("score", spec)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scored 5,000 rows with churn v1" in result.stdout, result.stdout
    assert "errors: 0 row(s)" in result.stdout

    from deltalake import DeltaTable

    frame = DeltaTable(str(table)).to_pandas()
    source = pd.read_csv(EXAMPLE / "data" / "customers.csv")
    assert len(frame) == 5000 and sorted(frame["customer_id"]) == sorted(source["customer_id"])
    assert (frame["model_version"] == "1").all() and frame["error"].isna().all()
    merged = frame.merge(source[["customer_id", "contract"]], on="customer_id", suffixes=("", "_in"))
    assert (merged["contract"] == merged["contract_in"]).all()

    missing = workspace.path / "no_contract.csv"
    source.drop(columns=["contract"]).head(10).to_csv(missing, index=False)
    refused = workspace.rayline("score", spec, "--input", str(missing))
    assert refused.returncode == 1
    assert "has no column(s) contract" in refused.stderr, refused.stderr
    assert DeltaTable(str(table)).version() == 0  # nothing appended
