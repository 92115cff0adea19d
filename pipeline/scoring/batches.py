"""The actor side of batch scoring: what every scored batch looks like (OutputPlan, built in the
driver) and the map_batches class that loads the Predictor once per actor and scores Arrow
batches, giving a row the model cannot take a null prediction and its reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.predictor import Predictor
from pipeline.rules.rows import row_errors

Loader = Callable[[], Predictor]


@dataclass(frozen=True)
class OutputPlan:
    """What every scored batch looks like; built in the driver, carried to each actor."""

    input_columns: list[str]              # the model's input fields
    carry: list[str]                      # id_column + passthrough, copied as they are
    schema: pa.Schema                     # of the output
    problem_type: str
    classes: Optional[list[Any]]
    model_name: str
    model_version: str
    scored_at: datetime
    run_id: str


def output_plan(predictor: Predictor, input_schema: pa.Schema, carry: list[str], model_name: str,
                model_version: str, scored_at: datetime, run_id: str) -> OutputPlan:
    classes = predictor.classes if predictor.problem_type == "classification" else None
    fields = [input_schema.field(c) for c in carry]
    if classes is None:
        fields.append(pa.field("prediction", pa.float64()))
    else:
        fields.append(pa.field("prediction", pa.array(classes).type))
        fields += [pa.field(f"probability_{label}", pa.float64()) for label in classes]
    fields += [pa.field("model_name", pa.string()), pa.field("model_version", pa.string()),
               pa.field("scored_at", pa.timestamp("us", tz="UTC")),
               pa.field("score_run_id", pa.string()), pa.field("error", pa.string())]
    return OutputPlan(input_columns=[f.name for f in predictor.schema.fields], carry=list(carry),
                      schema=pa.schema(fields), problem_type=predictor.problem_type,
                      classes=classes, model_name=model_name, model_version=model_version,
                      scored_at=scored_at, run_id=run_id)


class ScoreBatches:
    """map_batches callable class: loads the Predictor once per actor, scores Arrow batches."""

    def __init__(self, loader: Loader, plan: OutputPlan, tally=None):
        self.predictor = loader()
        self.plan = plan
        self.tally = tally

    def __call__(self, table: pa.Table) -> pa.Table:
        plan = self.plan
        frame = table.select(plan.input_columns).to_pandas()
        errors = row_errors(frame, self.predictor.schema)
        predicted = self._predict(frame, errors)
        n = table.num_rows
        # as they came, in the type of the first file (another file may have inferred another)
        arrays = [_cast(table.column(c), plan.schema.field(c).type) for c in plan.carry]
        for name in ["prediction"] + [f"probability_{c}" for c in plan.classes or []]:
            arrays.append(pa.array(predicted[name].to_numpy(), type=plan.schema.field(name).type,
                                   from_pandas=True))
        for name, value in (("model_name", plan.model_name), ("model_version", plan.model_version),
                            ("scored_at", plan.scored_at), ("score_run_id", plan.run_id)):
            arrays.append(pa.array([value] * n, type=plan.schema.field(name).type))
        arrays.append(pa.array(errors.tolist(), type=pa.string()))
        if self.tally is not None:
            self.tally.add.remote(n, int(sum(e is not None for e in errors)))
        return pa.Table.from_arrays(arrays, schema=plan.schema)

    def _predict(self, frame: pd.DataFrame, errors: np.ndarray) -> pd.DataFrame:
        """Predictions for the rows without errors (null elsewhere); a row the model still
        cannot take gets its own error in `errors` instead of failing the batch."""
        good = np.flatnonzero(pd.isna(errors))
        if len(good) == len(frame):
            try:
                return self.predictor.predict_frame(frame).reset_index(drop=True)
            except Exception:
                pass  # find the row(s) at fault below
        columns = ["prediction"] + [f"probability_{c}" for c in self.plan.classes or []]
        out = pd.DataFrame({c: np.full(len(frame), None, dtype=object) for c in columns})
        if not len(good):
            return out
        try:
            scored = self.predictor.predict_frame(frame.iloc[good])
            for c in columns:
                out.iloc[good, out.columns.get_loc(c)] = scored[c].to_numpy(dtype=object)
            return out
        except Exception:
            pass
        for i in good:
            try:
                one = self.predictor.predict_frame(frame.iloc[[i]])
            except Exception as exc:
                errors[i] = f"model: {str(exc) or type(exc).__name__}"
                continue
            for c in columns:
                out.iat[i, out.columns.get_loc(c)] = one[c].iloc[0]
        return out


def _cast(column: pa.ChunkedArray, to: pa.DataType) -> pa.ChunkedArray:
    return column if column.type == to else column.cast(to)


def _tally_class():
    import ray

    @ray.remote(num_cpus=0)
    class Tally:
        """Rows and errors so far, for the progress line (the final counts come from the output)."""

        def __init__(self):
            self.rows = self.errors = 0

        def add(self, rows: int, errors: int) -> None:
            self.rows += rows
            self.errors += errors

        def get(self) -> tuple[int, int]:
            return self.rows, self.errors

    return Tally
