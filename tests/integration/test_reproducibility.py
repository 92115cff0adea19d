"""Reproducibility through the real CLI: the same spec, seed and data, run twice with
`rayline run` on the shared cluster, give the same data (every versioned table's rows and
content hash), the same champion, the same validation and test metrics for every model family,
and the same predictions from the two registered models.

Stated tolerance: none for logistic_regression (scikit-learn, one process, seeded: bit for bit);
XGBOOST_TOLERANCE for xgboost, which trains on Ray Train (one multi-threaded worker on this
cluster): with the same plan it is bit for bit as well, and the tolerance only leaves room for
histogram sums added in another order where two runs get different thread or worker counts.
"""

from __future__ import annotations

import math
import re
import shutil

import pandas as pd
import pytest

from tests.integration.conftest import EXAMPLE, Workspace

pytestmark = pytest.mark.integration

FAMILIES = ("logistic_regression", "xgboost")
XGBOOST_TOLERANCE = 1e-6
TOLERANCE = {"logistic_regression": 0.0, "xgboost": XGBOOST_TOLERANCE}


def spec_text() -> str:
    """The example spec with two families and a smaller xgboost (80 rounds) to keep it quick."""
    text = (EXAMPLE / "spec.yaml").read_text()
    replacements = {
        "baseline_models: [logistic_regression, random_forest, xgboost]":
            "baseline_models: [logistic_regression, xgboost]",
        "xgboost: {max_depth: 4, n_estimators: 300, learning_rate: 0.05}":
            "xgboost: {max_depth: 4, n_estimators: 80, learning_rate: 0.1}",
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def repro_ws(tmp_path_factory, cluster) -> Workspace:
    path = tmp_path_factory.mktemp("repro")
    data = path / "examples" / "churn" / "data"
    data.mkdir(parents=True)
    shutil.copy(EXAMPLE / "data" / "customers.csv", data / "customers.csv")
    (path / "spec.yaml").write_text(spec_text())
    return Workspace(path=path, spec=path / "spec.yaml", env=cluster.env)


def client(ws: Workspace):
    import mlflow

    return mlflow.MlflowClient(ws.tracking_uri, ws.tracking_uri)


def quality(metrics: dict[str, float]) -> dict[str, float]:
    """Validation and test metrics (timings and latencies differ from run to run, by nature)."""
    return {k: v for k, v in metrics.items() if k.startswith(("val_", "test_"))}


def assert_close(a: dict[str, float], b: dict[str, float], tolerance: float, what: str) -> None:
    assert a and a.keys() == b.keys(), (what, sorted(a), sorted(b))
    for key in a:
        if tolerance == 0.0:
            same = a[key] == b[key] or (math.isnan(a[key]) and math.isnan(b[key]))
        else:
            same = math.isclose(a[key], b[key], rel_tol=0.0, abs_tol=tolerance)
        assert same, f"{what}: {key} {a[key]!r} != {b[key]!r}"


def test_the_same_spec_and_seed_give_the_same_metrics_and_predictions(repro_ws):
    import mlflow

    from pipeline.predictor import Predictor, find_predictor_dir

    ws = repro_ws
    run_ids = []
    for attempt in range(2):
        result = ws.rayline("run", "spec.yaml")
        assert result.returncode == 0, f"run {attempt + 1}:\n{result.stdout}\n{result.stderr}"
        run_ids.append(re.search(r"MLflow run ([0-9a-f]{32})", result.stdout).group(1))
    c = client(ws)
    first, second = (c.get_run(r) for r in run_ids)

    # The same data reached training: every versioned table has the same rows and content.
    content = {k: v for k, v in first.data.params.items()
               if k.startswith("data.") and k.endswith((".hash", ".rows"))}
    assert {k.split(".")[1] for k in content} >= {"raw_data", "processed_data", "feature_store"}
    assert content == {k: second.data.params[k] for k in content}
    assert first.data.params["seed"] == second.data.params["seed"] == "42"

    # The same champion, and the same metrics for it and for every family.
    champion = first.data.tags["rayline.champion_family"]
    assert second.data.tags["rayline.champion_family"] == champion
    assert_close(quality(first.data.metrics), quality(second.data.metrics),
                 TOLERANCE[champion], "champion")
    families = []
    for run in (first, second):
        children = c.search_runs([run.info.experiment_id],
                                 f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        families.append({r.data.tags["mlflow.runName"]: r for r in children
                         if "rayline.kind" not in r.data.tags})
    for family in FAMILIES:
        assert_close(quality(families[0][family].data.metrics),
                     quality(families[1][family].data.metrics), TOLERANCE[family], family)

    # The two registered models score records the same way.
    versions = {v.run_id: v.version for v in c.search_model_versions("name='churn'")}
    mlflow.set_tracking_uri(ws.tracking_uri)
    mlflow.set_registry_uri(ws.tracking_uri)
    predictors = [Predictor.load(find_predictor_dir(mlflow.artifacts.download_artifacts(
        f"models:/churn/{versions[run_id]}"))) for run_id in run_ids]
    records = pd.read_csv(ws.path / "examples" / "churn" / "data" / "customers.csv").sample(
        25, random_state=7)
    scores = [p.predict_frame(records) for p in predictors]
    assert list(scores[0]["prediction"]) == list(scores[1]["prediction"])
    probability = [c for c in scores[0].columns if c.startswith("probability_")]
    assert probability
    difference = (scores[0][probability] - scores[1][probability]).abs().to_numpy().max()
    assert difference <= TOLERANCE[champion], difference
