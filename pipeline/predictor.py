"""The one artifact a prediction needs: fitted FeaturePipeline + model + input schema + labels.

Saved as a folder of safe files (JSON, xgboost UBJ, skops) that MLflow stores as the model's
artifact; serving, batch scoring and `mlflow.pyfunc.load_model` all load it through `Predictor`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from pipeline.features import FeaturePipeline
from pipeline.models import TrainedModel, load_model
from pipeline.rules import ColumnRules


@dataclass
class FieldSpec(ColumnRules):
    """One input of a registered model: its rules (kind here is the training data's:
    numeric | categorical | boolean) and example values for the API docs."""
    examples: list[Any] = field(default_factory=list)

    @classmethod
    def of(cls, rules: ColumnRules, examples: list[Any]) -> "FieldSpec":
        return cls(**{f.name: getattr(rules, f.name) for f in fields(ColumnRules)}, examples=examples)

    def to_dict(self) -> dict:
        return super().to_dict() | {"examples": list(self.examples)}


@dataclass
class InputSchema:
    fields: list[FieldSpec]

    def to_dict(self) -> dict:
        return {"fields": [f.to_dict() for f in self.fields]}

    @classmethod
    def from_dict(cls, data: dict) -> "InputSchema":
        return cls([FieldSpec(**f) for f in data["fields"]])

    def example(self) -> dict[str, Any]:
        return {f.name: (f.examples[0] if f.examples else None) for f in self.fields}


def column_kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    return "categorical"


def infer_schema(frame: pd.DataFrame, columns: list[str], expectations) -> InputSchema:
    """The spec's rules for each input column, as a model checks one record: the kind is the
    training data's (a spec `type` is a check of the data, made at validation), and `unique` and
    `regex` stay with validation (`unique` is a property of a whole dataset; serving and batch
    scoring have never applied a regex, and a model's callers should not start seeing refusals
    because the model was retrained)."""
    declared = {c.column: ColumnRules.from_expectation(c) for c in expectations.columns}
    out = []
    for name in columns:
        series = frame[name]
        rules = declared.get(name) or ColumnRules(name, None)
        sample = series.dropna()
        example = _json_value(sample.iloc[0]) if len(sample) else None
        out.append(FieldSpec.of(
            replace(rules, kind=column_kind(series), unique=False, regex=None),
            examples=[example] if example is not None else []))
    return InputSchema(out)


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


class Predictor:
    def __init__(self, features: FeaturePipeline, model: TrainedModel, schema: InputSchema,
                 meta: dict[str, Any]):
        self.features = features
        self.model = model
        self.schema = schema
        self.meta = meta

    @property
    def classes(self) -> Optional[list[Any]]:
        return self.meta.get("classes")

    @property
    def problem_type(self) -> str:
        return self.meta["problem_type"]

    def scores(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict_scores(X)

    def predict_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        scores = self.scores(self.features.transform_records(records))
        return self._format(scores)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        scores = self.scores(self.features.transform(frame).to_numpy(dtype=np.float64))
        if self.problem_type == "regression":
            return pd.DataFrame({"prediction": scores}, index=frame.index)
        classes = self.classes
        out = pd.DataFrame({"prediction": [classes[i] for i in scores.argmax(axis=1)]}, index=frame.index)
        for j, label in enumerate(classes):
            out[f"probability_{label}"] = scores[:, j]
        return out

    def _format(self, scores: np.ndarray) -> list[dict[str, Any]]:
        if self.problem_type == "regression":
            return [{"prediction": float(v)} for v in scores]
        classes = self.classes
        keys = [str(c) for c in classes]
        best = scores.argmax(axis=1)
        return [{"prediction": classes[b], "probabilities": dict(zip(keys, map(float, row)))}
                for b, row in zip(best, scores)]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.features.save(directory / "features.json")
        self.model.save(directory / "model")
        (directory / "schema.json").write_text(json.dumps(self.schema.to_dict(), indent=2))
        (directory / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Predictor":
        directory = Path(directory)
        return cls(
            features=FeaturePipeline.load(directory / "features.json"),
            model=load_model(directory / "model"),
            schema=InputSchema.from_dict(json.loads((directory / "schema.json").read_text())),
            meta=json.loads((directory / "meta.json").read_text()),
        )


ARTIFACT_NAME = "rayline_model"


def find_predictor_dir(model_dir: str | Path) -> Path:
    """The predictor folder inside a downloaded MLflow model (artifacts/rayline_model)."""
    model_dir = Path(model_dir)
    for candidate in (model_dir / "artifacts" / ARTIFACT_NAME, model_dir / ARTIFACT_NAME, model_dir):
        if (candidate / "meta.json").exists():
            return candidate
    raise FileNotFoundError(f"no rayline model in {model_dir}")
