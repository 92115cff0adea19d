"""Batch scoring: a registered model over a whole dataset, with Ray Data.

`score(spec)` reads the batch option's `input` (files: a path, glob, s3:// or gs://) or, without
one, the spec's own sources; checks that every input column the model needs is there (a missing
column stops the job before any work); scores with `map_batches` over an actor pool whose actors
load the Predictor once each, through an injectable loader (default: the registered version,
pinned by number in the driver so that every actor scores with the same model even if
@champion moves mid-run); and writes parquet (one folder per run) or appends to a Delta table.

Rows the model cannot take (a null where the spec forbids one, a wrong type, a value outside the
spec's range or allowed values: the same rules as `POST /predict`) are never dropped: they get a
null prediction and an `error` that says why, and they are counted. Each run is an MLflow run
tagged `rayline.kind=batch_score` with rows, errors, duration, output path and model version.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.errors import RaylineError
from pipeline.rules.rows import reason_of, row_errors
from pipeline.predictor import InputSchema, Predictor
from pipeline.spec import BatchServing, FilesSource, Spec
from pipeline.versioning import dataset_schema

Loader = Callable[[], Predictor]
RESERVED = ("prediction", "model_name", "model_version", "scored_at", "score_run_id", "error")


class ScoringError(RaylineError, RuntimeError):
    """The whole job cannot run: no model, no input, a column the model needs is missing."""

    title = "cannot score"


@dataclass(frozen=True)
class RegistryLoader:
    """The default loader: one registered version, downloaded from MLflow where it is called
    (in each actor). The tracking store must be reachable from every node, as for serving."""

    tracking_uri: str
    model_name: str
    version: str

    def __call__(self) -> Predictor:
        from pipeline import registry

        return registry.load_predictor(self.model_name, self.version, self.tracking_uri).predictor


@dataclass
class ScoreResult:
    model_name: str
    model_version: str
    rows: int
    errors: int
    seconds: float                 # reading + scoring + writing
    output: str
    format: str
    run_id: str
    actors: int
    error_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    def summary_lines(self) -> list[str]:
        lines = [f"scored {self.rows:,} rows with {self.model_name} v{self.model_version} in "
                 f"{self.seconds:.1f} s ({self.rows_per_s:,.0f} rows/s, {self.actors} actor(s))",
                 f"written: {self.output} ({self.format})",
                 f"errors: {self.errors:,} row(s) not scored (prediction null, reason in `error`)"]
        lines += [f"  {count:,} x {reason}" for reason, count in self.error_reasons.items()]
        lines.append(f"MLflow run {self.run_id} (rayline.kind=batch_score)")
        return lines


# --------------------------------------------------------------------------- the actor

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


# --------------------------------------------------------------------------- the job

def score(spec: Spec, *, model: Optional[str] = None, input: Optional[str] = None,
          output: Optional[str] = None, format: Optional[str] = None,
          loader: Optional[Loader] = None, model_version: Optional[str] = None,
          max_actors: Optional[int] = None, progress: Callable[[str], None] = print,
          verbose: bool = False) -> ScoreResult:
    """Score the batch input with a registered model (see the module docstring).

    `model` is an alias or version number (default: the batch option's `model`, `champion`).
    `loader` replaces the registry download (it is called once in the driver and once per
    actor, and must be picklable); `model_version` then labels the output (default: `model`)."""
    import mlflow

    from pipeline import registry
    from pipeline import execution

    batch = spec.serving_or_defaults("batch")
    ref = str(model or batch.model)
    fmt = format or batch.format
    registry.configure_for(spec)
    if loader is None:
        try:
            version, _ = registry.resolve_version(spec.name, ref)
        except LookupError as exc:
            raise ScoringError(str(exc)) from None
        loader = RegistryLoader(spec.tracking.uri, spec.name, version)
    else:
        version = str(model_version or ref)
    predictor = loader()
    progress(f"model: {spec.name} v{version} ({predictor.meta.get('family', '?')}), "
             f"{len(predictor.schema.fields)} input columns")

    execution.ensure_ray(verbose=verbose)
    ds, source = read_input(spec, batch, input)
    carry = _carry_columns(spec, batch, predictor)
    _check_columns(ds.schema().names, predictor.schema, carry, source)
    actors = actor_pool_size(max_actors or batch.max_actors)
    scored_at = datetime.now(timezone.utc).replace(microsecond=0)
    destination = _destination(output or batch.output, fmt, spec.name, version, scored_at)

    with mlflow.start_run(run_name=f"batch_score-{spec.name}-v{version}") as run:
        mlflow.set_tags({"rayline.kind": "batch_score", "rayline.spec_name": spec.name,
                         "rayline.model_name": spec.name, "rayline.model_version": version,
                         "rayline.output": destination})
        mlflow.log_params({"model_ref": ref, "model_version": version, "input": source,
                           "output": destination, "format": fmt, "max_actors": actors,
                           "batch_size": batch.batch_size or "block"})
        plan = output_plan(predictor, dataset_schema(ds), carry, spec.name, version, scored_at,
                           run.info.run_id)
        tally = _tally_class().remote()
        scored = ds.map_batches(
            ScoreBatches, fn_constructor_args=(loader, plan, tally), batch_format="pyarrow",
            batch_size=batch.batch_size, num_cpus=1 if execution.cluster_shape()[0] >= 2 else 0.5,
            compute=_actor_pool(actors))
        progress(f"scoring {source} -> {destination} ({fmt}) on up to {actors} actor(s)")
        start = time.perf_counter()
        with _reporting(tally, progress, start):
            _write(scored, destination, fmt)
        seconds = time.perf_counter() - start
        rows, errors, reasons = count_output(destination, fmt, run.info.run_id)
        mlflow.log_metrics({"rows": rows, "errors": errors, "duration_s": seconds,
                            "rows_per_s": rows / seconds if seconds else 0.0})
        if reasons:
            registry.log_dict(reasons, "batch_score/errors.json")
    return ScoreResult(model_name=spec.name, model_version=version, rows=rows, errors=errors,
                       seconds=seconds, output=destination, format=fmt, run_id=run.info.run_id,
                       actors=actors, error_reasons=reasons)


def read_input(spec: Spec, batch: BatchServing, input: Optional[str] = None):
    """(lazy Ray Dataset, a description of where it came from)."""
    from pipeline.sources import SourceError, read_sources
    from pipeline.sources.files import read_files

    path = input or batch.input
    if path is None:
        return read_sources(spec.sources, spec.origin), "the spec's sources"
    if "://" not in path:
        path = os.path.abspath(path)
    try:
        source = FilesSource(type="files", name="batch_input", path=path, format=batch.input_format)
    except ValueError as exc:
        raise ScoringError(f"batch input {path}: {exc}") from None
    try:
        return read_files(source), path
    except (FileNotFoundError, SourceError) as exc:
        raise ScoringError(f"batch input: {exc}") from None


def actor_pool_size(cap: Optional[int] = None) -> int:
    """The cluster's CPUs less one (Ray Data's read and write tasks need a slot), at least one."""
    from pipeline.execution import cluster_shape

    cpus = cluster_shape()[0]
    size = max(1, int(cpus) - 1)
    return min(size, cap) if cap else size


def _actor_pool(size: int):
    import ray.data

    return ray.data.ActorPoolStrategy(min_size=1, max_size=size)


def _carry_columns(spec: Spec, batch: BatchServing, predictor: Predictor) -> list[str]:
    id_column = spec.id_column or predictor.meta.get("id_column")
    carry = list(dict.fromkeys([*([id_column] if id_column else []), *batch.passthrough]))
    clash = [c for c in carry if c in RESERVED or c.startswith("probability_")]
    if clash:
        raise ScoringError(f"column(s) {', '.join(clash)} would clash with the output's own columns")
    return carry


def _check_columns(names: list[str], schema: InputSchema, carry: list[str], source: str) -> None:
    missing = [f.name for f in schema.fields if f.name not in names]
    missing += [c for c in carry if c not in names and c not in missing]
    if missing:
        raise ScoringError(f"the input ({source}) has no column(s) {', '.join(missing)}, which the "
                           f"model (or id_column / passthrough) needs; it has: {', '.join(names)}")


def _destination(output: str, fmt: str, name: str, version: str, scored_at: datetime) -> str:
    """parquet: a new folder per run under `output`; delta: the table at `output` itself."""
    base = output if "://" in output else os.path.abspath(output)
    if fmt == "delta":
        return base
    folder = f"{base.rstrip('/')}/{name}-v{version}-{scored_at:%Y%m%dT%H%M%SZ}"
    if "://" not in folder:
        candidate, n = folder, 1
        while os.path.exists(candidate):
            candidate, n = f"{folder}-{n}", n + 1
        folder = candidate
    return folder


def _write(ds, destination: str, fmt: str) -> None:
    if fmt == "delta":
        if "://" not in destination:
            Path(destination).mkdir(parents=True, exist_ok=True)
        ds.write_delta(destination, storage_options=_delta_options(destination))
        return
    from pipeline.sources.files import filesystem_for

    ds.write_parquet(destination, filesystem=filesystem_for(destination))


def _delta_options(path: str) -> Optional[dict[str, str]]:
    if not path.startswith(("s3://", "s3a://")):
        return None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options = {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def count_output(destination: str, fmt: str, run_id: str) -> tuple[int, int, dict[str, int]]:
    """(rows, rows with an error, {reason: count}) of this run's output, read back from it."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    if fmt == "delta":
        from deltalake import DeltaTable

        dataset = DeltaTable(destination, storage_options=_delta_options(destination)).to_pyarrow_dataset()
        mine = pc.field("score_run_id") == run_id
    else:
        from pipeline.sources.files import filesystem_for

        if "://" not in destination and not os.path.isdir(destination):
            return 0, 0, {}  # an empty input writes no files
        fs = filesystem_for(destination)
        dataset = pds.dataset(destination if fs is None else destination.split("://", 1)[1],
                              format="parquet", filesystem=fs)
        mine = None
    rows = dataset.count_rows(filter=mine)
    flagged = dataset.to_table(columns=["error"], filter=pc.field("error").is_valid() if mine is None
                               else mine & pc.field("error").is_valid()).column("error").to_pylist()
    reasons: dict[str, int] = {}
    for message in flagged:
        for part in message.split("; "):
            key = reason_of(part)
            reasons[key] = reasons.get(key, 0) + 1
    return rows, len(flagged), dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:10])


class _reporting:
    """A progress line every few seconds while the dataset is being written."""

    def __init__(self, tally, progress: Callable[[str], None], start: float, every: float = 5.0):
        self.tally, self.progress, self.start, self.every = tally, progress, start, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="rayline-score-progress")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=self.every)

    def _run(self) -> None:
        import ray

        while not self.stop.wait(self.every):
            try:
                rows, errors = ray.get(self.tally.get.remote(), timeout=self.every)
            except Exception:  # progress is best effort
                continue
            if not rows:
                continue
            elapsed = time.perf_counter() - self.start
            self.progress(f"  {rows:,} rows scored, {errors:,} with errors "
                          f"({rows / elapsed:,.0f} rows/s)")
