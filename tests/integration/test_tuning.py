"""Tuning through its entry points on the shared cluster: `rayline run` with a tuning section
(a child run per trial, the champion retrained with the best params), `rayline tune` and an
interrupted search continued with `--resume`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import BIN, EXAMPLE, Workspace

pytestmark = pytest.mark.integration

N_TRIALS = 6

RUN_TUNING = f"""
tuning:
  method: optuna
  objective: maximize_f1
  n_trials: {N_TRIALS}
  search_space:
    xgboost.n_estimators: [10, 40, int]
    xgboost.max_depth: [2, 5, int]
    learning_rate: [0.05, 0.3, log]
    logistic_regression.C: [0.01, 10, log]
"""

# One trial at a time, each some hundreds of xgboost rounds (no early stopping, no ASHA), so
# the search can be stopped with some trials done and one in progress.
SLOW_TUNING = f"""
tuning:
  method: optuna
  objective: maximize_auc
  n_trials: {N_TRIALS}
  max_concurrent_trials: 1
  early_stopping: none
  models: [xgboost]
  search_space:
    max_depth: [4, 6, int]
    n_estimators: [200, 300, int]
    learning_rate: [0.01, 0.1, log]
    early_stopping_rounds: [0]
"""


@pytest.fixture(scope="module")
def tune_ws(tmp_path_factory, cluster) -> Workspace:
    path = tmp_path_factory.mktemp("tune")
    data = path / "examples" / "churn" / "data"
    data.mkdir(parents=True)
    shutil.copy(EXAMPLE / "data" / "customers.csv", data / "customers.csv")
    return Workspace(path=path, spec=path / "spec.yaml", env=cluster.env)


def write_spec(ws: Workspace, name: str, tuning: str) -> str:
    text = (EXAMPLE / "spec.yaml").read_text()
    text = text.replace("baseline_models: [logistic_regression, random_forest, xgboost]",
                        "baseline_models: [logistic_regression, xgboost]")
    (ws.path / name).write_text(text + tuning)
    return name


def client(ws: Workspace):
    import mlflow

    return mlflow.MlflowClient(ws.tracking_uri, ws.tracking_uri)


def trial_runs(ws: Workspace, parent: str) -> list:
    c = client(ws)
    experiment = c.get_experiment_by_name("churn")
    return c.search_runs([experiment.experiment_id],
                         f"tags.mlflow.parentRunId = '{parent}' and tags.`rayline.kind` = 'tuning_trial'")


def artifact_json(ws: Workspace, run_id: str, path: str):
    return json.loads(Path(client(ws).download_artifacts(run_id, path)).read_text())


def test_run_with_tuning_logs_every_trial_and_retrains_with_the_best_params(tune_ws):
    ws = tune_ws
    result = ws.rayline("run", write_spec(ws, "run.yaml", RUN_TUNING))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "✓ Tune logistic_regression, xgboost" in result.stderr
    assert "retraining with the best trial's params" in result.stderr
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", result.stdout).group(1)

    runs = trial_runs(ws, run_id)
    assert len(runs) == N_TRIALS
    by_family = {}
    for run in runs:
        family = run.data.params["family"]
        by_family.setdefault(family, []).append(run)
        assert run.data.tags["rayline.trial_status"] in ("done", "stopped")
        assert "val_f1_score" in run.data.metrics
        tuned = {k.split(".", 1)[1] for k in run.data.params if k.startswith(f"{family}.")}
        assert tuned == ({"C"} if family == "logistic_regression"
                         else {"n_estimators", "max_depth", "learning_rate"})
    assert {f: len(r) for f, r in by_family.items()} == {"logistic_regression": 3, "xgboost": 3}

    trials = artifact_json(ws, run_id, "tuning/trials.json")
    best = artifact_json(ws, run_id, "tuning/best.json")
    assert [t["trial"] for t in trials] == list(range(1, N_TRIALS + 1))
    assert best["objective"] == {"metric": "f1_score", "mode": "max"}
    parent = client(ws).get_run(run_id)
    for family, pick in best["best"].items():
        done = [t for t in trials if t["family"] == family and t["status"] == "done"]
        assert pick["value"] == max(t["val_f1_score"] for t in done)
        for k, v in pick["params"].items():
            assert parent.data.params[f"tuning.best.{family}.{k}"] == str(v)

    # The family runs of the final training carry the tuned params over model_params ...
    c = client(ws)
    families = {r.data.tags["mlflow.runName"]: r for r in c.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
        if "rayline.kind" not in r.data.tags}
    for family, pick in best["best"].items():
        for k, v in pick["params"].items():
            assert families[family].data.params[f"{family}.{k}"] == str(v), (family, k)
    # ... and the registered champion is the model trained with them.
    import mlflow

    from pipeline.predictor import find_predictor_dir

    version = c.get_model_version_by_alias("churn", "champion")
    assert version.run_id == run_id
    mlflow.set_tracking_uri(ws.tracking_uri)
    mlflow.set_registry_uri(ws.tracking_uri)
    local = mlflow.artifacts.download_artifacts(f"models:/churn/{version.version}")
    meta = json.loads((find_predictor_dir(local) / "model" / "model.json").read_text())
    champion = parent.data.tags["rayline.champion_family"]
    assert meta["family"] == champion
    tuned = best["best"][champion]["params"]
    assert {k: meta["params"][k] for k in tuned} == tuned


def finished_trials(experiment: Path) -> dict[str, int]:
    """{trial id: pid of the Ray worker that ran it} for every trial that reported its end."""
    done = {}
    for result in experiment.glob("trial_*/result.json"):
        for line in result.read_text().splitlines():
            if '"final": 1' in line:
                done[result.parent.name.removeprefix("trial_")] = json.loads(line)["pid"]
    return done


def test_an_interrupted_search_resumes_to_n_trials(tune_ws):
    ws = tune_ws
    spec = write_spec(ws, "slow.yaml", SLOW_TUNING)
    experiment = ws.path / ".rayline" / "ray_results" / "churn-tune"
    shutil.rmtree(experiment, ignore_errors=True)  # only this search's trials count below
    log = open(ws.path / "tune-killed.log", "w")
    proc = subprocess.Popen([str(BIN / "rayline"), "tune", spec], cwd=ws.path, env=ws.env,
                            stdout=log, stderr=subprocess.STDOUT)
    frozen: set[int] = set()
    try:
        deadline = time.time() + 240
        while len(finished_trials(experiment)) < 2:
            assert proc.poll() is None, (ws.path / "tune-killed.log").read_text()
            assert time.time() < deadline, "two trials did not finish in 240 s"
            time.sleep(0.1)
        # Freeze the trial worker (Tune reuses it for the next trial), so the search stops
        # mid-trial however fast trials are here, while the driver goes on saving its state
        # (every 2 s); then kill the driver as a crash would.
        frozen = set(finished_trials(experiment).values())
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(3)
        before = set(finished_trials(experiment))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        for pid in frozen:  # let Ray end the dead driver's worker
            os.kill(pid, signal.SIGCONT)
        log.close()
    assert 2 <= len(before) < N_TRIALS, before

    result = ws.rayline("tune", spec, "--resume")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "✓ Tune xgboost (resumed)" in result.stderr
    assert "Tuning trials" in result.stdout and "Best configuration per model" in result.stdout
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", result.stdout).group(1)
    trials = artifact_json(ws, run_id, "tuning/trials.json")
    assert len(trials) == N_TRIALS
    assert sorted(t["trial"] for t in trials) == list(range(1, N_TRIALS + 1))
    assert all(t["status"] == "done" for t in trials), trials
    assert before <= {t["trial_id"] for t in trials}
    for trial_id in before:                                   # kept, not run again
        result_file = experiment / f"trial_{trial_id}" / "result.json"
        assert result_file.read_text().count('"final": 1') == 1, trial_id
    assert len(trial_runs(ws, run_id)) == N_TRIALS
    for t in trials:                                          # the table printed every trial
        assert re.search(rf"│\s+{t['trial']} │ .*xgboost", result.stdout), result.stdout
