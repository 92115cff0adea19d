"""Model families. `train_families` trains what the spec lists, each through Ray: the
scikit-learn families side by side as Ray tasks, then xgboost, then the torch families, one
Ray Train run at a time."""

from __future__ import annotations

from typing import Any

from pipeline.models.base import TrainData, TrainedModel, TrainPlan, load_model
from pipeline.models.families import (
    AVAILABLE, INTERPRETABILITY, SKLEARN_FAMILIES, TORCH_FAMILIES, unavailable,
)

__all__ = ["AVAILABLE", "INTERPRETABILITY", "TrainData", "TrainPlan", "TrainedModel",
           "family_class", "load_model", "train_families", "unavailable"]


def family_class(family: str) -> type[TrainedModel]:
    if family in SKLEARN_FAMILIES:
        from pipeline.models.sklearn_models import SklearnModel
        return SklearnModel
    if family == "xgboost":
        from pipeline.models.xgboost_model import XGBoostModel
        return XGBoostModel
    if family in TORCH_FAMILIES:
        from pipeline.models.torch_models import TorchModel
        return TorchModel
    raise ValueError(f"unknown model family {family}")


def train_families(families: list[str], data: TrainData,
                   model_params: dict[str, dict[str, Any]], on_done=None) -> dict[str, TrainedModel]:
    """Train each family; `on_done(family, seconds)` is called as each finishes."""
    import time

    trained: dict[str, TrainedModel] = {}
    sklearn = [f for f in families if f in SKLEARN_FAMILIES]
    if sklearn:
        from pipeline.models.sklearn_models import train_sklearn

        start = time.perf_counter()
        trained.update(train_sklearn(sklearn, data, model_params))
        for f in sklearn:
            on_done and on_done(f, time.perf_counter() - start)
    if "xgboost" in families:
        from pipeline.models.xgboost_model import train_xgboost

        start = time.perf_counter()
        trained["xgboost"] = train_xgboost(data, model_params.get("xgboost", {}))
        on_done and on_done("xgboost", time.perf_counter() - start)
    for family in (f for f in TORCH_FAMILIES if f in families):   # one TorchTrainer run at a time
        from pipeline.models.torch_models import train_torch

        start = time.perf_counter()
        trained[family] = train_torch(family, data, model_params.get(family, {}))
        on_done and on_done(family, time.perf_counter() - start)
    return {f: trained[f] for f in families if f in trained}
