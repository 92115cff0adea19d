"""Ray Train families on the shared cluster: a worker killed mid-training is restarted and the run
resumes from its last checkpoint (the epoch / round counter continues), for torch and xgboost;
and the torch families train data-parallel (DDP) through `train_families`.

Each run is small (2,000 rows, a few epochs): Ray Train's own start-up and shutdown dominate.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.execution import TrainPlan
from pipeline.models import TrainData, load_model, train_families

pytestmark = pytest.mark.integration


@pytest.fixture
def ray_on_cluster(cluster, monkeypatch):
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def synthetic(tmp_path, tag: str, classes: int = 2, rows: int = 2000, workers: int = 1):
    """Rows 0..n-500 train, the next 250 validation, the last 250 a held-out test."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(rows, 6))
    z = X[:, 0] + 0.8 * X[:, 1] - 0.6 * X[:, 2] + 0.5 * X[:, 3] * X[:, 4]
    y = (z > 0).astype(np.int64) if classes == 2 else np.digitize(z, [-0.7, 0.7]).astype(np.int64)
    cut, test = rows - 500, rows - 250
    data = TrainData(X[:cut], y[:cut], X[cut:test], y[cut:test], [f"x{i}" for i in range(6)],
                     "classification", classes, seed=3,
                     plan=TrainPlan(workers, 1.0, False, "test"),
                     storage_path=str(tmp_path / "ray_results"), run_tag=tag)
    return data, X[test:], y[test:]


def accuracy(model, X, y) -> float:
    return float((model.predict_scores(X).argmax(axis=1) == y).mean())


def test_neural_network_resumes_from_its_checkpoint_after_a_worker_crash(ray_on_cluster, tmp_path):
    from pipeline.models.torch_models import train_torch

    data, X_test, y_test = synthetic(tmp_path, "crash-nn")
    marker = tmp_path / "killed-nn"
    model = train_torch("neural_network", data,
                        {"epochs": 8, "checkpoint_every": 2, "patience": 100},
                        test_hooks={"_test_kill_after_epoch": 3, "_test_kill_marker": str(marker)})

    assert marker.read_text() == "3"                 # the worker was killed after epoch 3 ...
    report = model.training_report
    assert report["start_epoch"] == 2                # ... and the restart resumed at epoch 2
    assert report["epoch"] == 8 and report["final"]  # counting on, not from 0, to the end
    assert model.params["epochs_trained"] == 8
    assert accuracy(model, X_test, y_test) >= 0.85


def test_xgboost_resumes_from_its_checkpoint_after_a_worker_crash(ray_on_cluster, tmp_path):
    from pipeline.models.xgboost_model import train_xgboost

    data, X_test, y_test = synthetic(tmp_path, "crash-xgb")
    marker = tmp_path / "killed-xgb"
    model = train_xgboost(data, {"n_estimators": 60, "checkpoint_every": 10,
                                 "early_stopping_rounds": 0, "max_depth": 3},
                          test_hooks={"_test_kill_after_round": 25,
                                      "_test_kill_marker": str(marker)})

    assert marker.read_text() == "25"
    report = model.training_report
    assert report["start_round"] == 20               # resumed from the round-20 checkpoint
    assert report["rounds"] == 60 and report["final"]
    assert model.booster.num_boosted_rounds() == 60
    assert accuracy(model, X_test, y_test) >= 0.85


def test_torch_families_train_data_parallel_and_round_trip(ray_on_cluster, tmp_path):
    data, X_test, y_test = synthetic(tmp_path, "ddp", classes=3, workers=2)
    params = {"transformer": {"epochs": 10, "d_model": 16, "n_heads": 2, "n_layers": 1,
                              "batch_size": 128, "learning_rate": 3e-3, "patience": 100}}
    done: list[str] = []
    models = train_families(["transformer"], data, params, on_done=lambda f, s: done.append(f))

    model = models["transformer"]
    assert done == ["transformer"] and model.family == "transformer"
    report = model.training_report
    assert (report["workers"], report["epoch"], report["start_epoch"]) == (2, 10, 0)
    scores = model.predict_scores(X_test)
    assert scores.shape == (250, 3) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert accuracy(model, X_test, y_test) >= 0.75
    model.save(tmp_path / "saved")
    np.testing.assert_array_equal(load_model(tmp_path / "saved").predict_scores(X_test), scores)
