"""The torch families without Ray: the training loop (`fit_network`) and `TorchModel` directly.

Small synthetic problems (1,200 training rows, a few epochs, one thread) keep this quick.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.models import AVAILABLE, family_class, load_model  # noqa: E402
from pipeline.models.torch_models import (  # noqa: E402
    FitState, TorchModel, fit_network, n_outputs, params_for)

FAMILIES = ("neural_network", "transformer")
# Small enough to train in a second or two each; big enough to learn the problems below.
QUICK = {"neural_network": {"hidden_layers": [32, 16], "epochs": 15, "batch_size": 64,
                            "learning_rate": 3e-3},
         "transformer": {"d_model": 16, "n_heads": 2, "n_layers": 1, "epochs": 15,
                         "batch_size": 64, "learning_rate": 3e-3}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def problem(kind: str, rows: int = 1500, seed: int = 0):
    """Features on very different scales (the network standardises them itself)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 5)) * np.array([1.0, 10.0, 100.0, 1.0, 1.0])
    z = X[:, 0] + X[:, 1] / 10 - X[:, 2] / 100 + 0.5 * X[:, 3] * X[:, 4]
    if kind == "regression":
        y = 40.0 + 3.0 * z + rng.normal(scale=0.3, size=rows)   # target far from N(0, 1)
    elif kind == "binary":
        y = (z > 0).astype(np.int64)
    else:
        y = np.digitize(z, [-0.8, 0.8]).astype(np.int64)
    cut = int(rows * 0.8)
    return X[:cut], y[:cut], X[cut:], y[cut:]


def fit(family: str, kind: str, seed: int = 1, **overrides):
    X, y, Xv, yv = problem(kind)
    problem_type = "regression" if kind == "regression" else "classification"
    n_classes = 0 if kind == "regression" else int(y.max()) + 1
    params = params_for(family, {**QUICK[family], **overrides})
    net, progress = fit_network(family, params, X, y, Xv, yv, problem_type, n_classes, seed)
    saved = {**params, "n_features": X.shape[1], "n_outputs": n_outputs(problem_type, n_classes),
             "problem_type": problem_type, "n_classes": n_classes}
    return TorchModel(family, saved, net), progress, (Xv, yv)


# --------------------------------------------------------------------------- learning

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind,floor",
                         [("binary", 0.92), ("multiclass", 0.80), ("regression", 0.90)])
def test_learns_a_simple_problem(family, kind, floor):
    model, progress, (Xv, yv) = fit(family, kind)
    scores = model.predict_scores(Xv)
    if kind == "regression":
        assert scores.shape == (len(Xv),)
        r2 = 1 - ((scores - yv) ** 2).sum() / ((yv - yv.mean()) ** 2).sum()
        assert r2 >= floor, f"R² {r2:.3f}"            # predictions are back on the target's scale
    else:
        k = 2 if kind == "binary" else 3
        assert scores.shape == (len(Xv), k)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
        acc = (scores.argmax(axis=1) == yv).mean()
        assert acc >= floor, f"accuracy {acc:.3f}"
    assert 1 <= progress.best_epoch <= progress.epoch
    assert len(progress.history) == progress.epoch


def test_early_stopping_waits_patience_epochs_after_the_best():
    _, progress, _ = fit("neural_network", "binary", epochs=200, patience=2, learning_rate=0.05)
    assert progress.stopped and progress.epoch < 200
    assert progress.epoch - progress.best_epoch == 2


# --------------------------------------------------------------------------- reproducibility

@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_predictions(family):
    a, _, (Xv, _) = fit(family, "binary", seed=5, epochs=3)
    b, _, _ = fit(family, "binary", seed=5, epochs=3)
    c, _, _ = fit(family, "binary", seed=6, epochs=3)
    np.testing.assert_array_equal(a.predict_scores(Xv), b.predict_scores(Xv))
    assert not np.array_equal(a.predict_scores(Xv), c.predict_scores(Xv))


@pytest.mark.parametrize("family", FAMILIES)
def test_resuming_from_a_checkpoint_trains_exactly_as_without_one(family, tmp_path):
    """What a restarted Ray Train worker does: the state written at epoch 2 of 5, read back,
    carries on to the same weights as an uninterrupted run (seeds are per epoch)."""
    X, y, Xv, yv = problem("multiclass")
    params = params_for(family, {**QUICK[family], "epochs": 5, "patience": 100})

    def at_epoch_2(state: FitState) -> None:
        if state.progress.epoch == 2:
            state.write(tmp_path)

    whole, _ = fit_network(family, params, X, y, Xv, yv, "classification", 3, 9,
                           after_epoch=at_epoch_2)
    resume = FitState.read(tmp_path)
    assert resume.progress.epoch == 2
    resumed, progress = fit_network(family, params, X, y, Xv, yv, "classification", 3, 9,
                                    resume=resume)
    assert (progress.start_epoch, progress.epoch, len(progress.history)) == (2, 5, 5)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


# --------------------------------------------------------------------------- saving

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_save_load_round_trip_gives_identical_predictions(family, kind, tmp_path):
    model, _, (Xv, _) = fit(family, kind, epochs=2)
    model.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.json", "weights.pt"]
    loaded = load_model(tmp_path / "model")
    assert isinstance(loaded, TorchModel) and loaded.family == family
    assert not loaded.net.training                     # eval mode: dropout off
    np.testing.assert_array_equal(loaded.predict_scores(Xv), model.predict_scores(Xv))
    assert loaded.predict_scores(Xv[:0]).shape[0] == 0


def test_weights_are_loaded_with_weights_only(tmp_path):
    """A weights file that carries a pickled object is refused, never executed."""
    model, _, _ = fit("neural_network", "binary", epochs=1)
    model.save(tmp_path / "model")
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    torch.save({"body.0.weight": Payload()}, tmp_path / "model" / "weights.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_model(tmp_path / "model")
    assert not ran.exists()


# --------------------------------------------------------------------------- registration, params

def test_both_families_are_registered():
    for family in FAMILIES:
        assert family in AVAILABLE
        assert family_class(family) is TorchModel


def test_params_defaults_and_errors():
    p = params_for("neural_network", {"hidden_layers": [8], "epochs": 40})
    assert p["hidden_layers"] == [8] and p["dropout"] == 0.1 and p["checkpoint_every"] == 10
    assert params_for("transformer", {})["checkpoint_every"] == 10   # at most ~5 reports a run
    with pytest.raises(ValueError, match="unknown key.*hidden_layer\\b"):
        params_for("neural_network", {"hidden_layer": [8]})
    with pytest.raises(ValueError, match="multiple of n_heads"):
        params_for("transformer", {"d_model": 30, "n_heads": 4})
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        params_for("neural_network", {"checkpoint_every": 0})
