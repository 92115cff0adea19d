"""What every model family trains from and hands back."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.families import INTERPRETABILITY


@dataclass(frozen=True)
class TrainPlan:
    """How one training run uses Ray Train: workers, CPUs each, GPU; and why (for the run log).
    Chosen by `pipeline.execution.plan_training` from what the cluster reports."""
    num_workers: int
    cpus_per_worker: float
    use_gpu: bool
    reason: str

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_worker))


@dataclass
class TrainData:
    X_train: np.ndarray
    y_train: np.ndarray       # classification: class indices 0..k-1; regression: float
    X_val: np.ndarray
    y_val: np.ndarray
    feature_names: list[str]
    problem_type: str
    n_classes: int            # 0 for regression
    seed: int
    plan: TrainPlan
    storage_path: str         # where Ray Train keeps checkpoints
    run_tag: str              # names this training run's checkpoint folder


class TrainedModel(ABC):
    family: str = ""

    def __init__(self, params: dict[str, Any]):
        self.params = params
        # What Ray Train reported at the end of training (epochs, resume point, ...); not saved.
        self.training_report: dict[str, Any] = {}

    @abstractmethod
    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        """Classification: class probabilities (n, k). Regression: predictions (n,)."""

    @abstractmethod
    def _save_weights(self, directory: Path) -> str:
        """Write the fitted weights in a safe format; return the file name."""

    @classmethod
    @abstractmethod
    def _load_weights(cls, directory: Path, meta: dict) -> "TrainedModel":
        ...

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = self._save_weights(directory)
        meta = {"family": self.family, "params": self.params, "weights": weights}
        (directory / "model.json").write_text(json.dumps(meta, indent=2, default=str))

    @property
    def interpretability(self) -> int:
        return INTERPRETABILITY.get(self.family, 0)


def load_model(directory: str | Path) -> TrainedModel:
    from pipeline.models import family_class

    directory = Path(directory)
    meta = json.loads((directory / "model.json").read_text())
    return family_class(meta["family"])._load_weights(directory, meta)


def crash_once_for_test(marker: str | Path, counter: int) -> None:
    """Tests only (reached through a `_test_kill_*` key of train_loop_config): kill this Ray Train
    worker process as a crash would, once: `marker` records that it happened and at which epoch
    or round. Ray Train first finishes registering every report so far, so the test knows which
    checkpoint the restarted run must resume from."""
    import os
    import signal

    import ray.train

    ray.train.get_all_reported_checkpoints(timeout_s=120)
    Path(marker).write_text(str(counter))
    os.kill(os.getpid(), signal.SIGKILL)
