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

Modules: this one (the job), `batches` (the actor side), `output` (where scores go, counted back).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

from pipeline.errors import RaylineError
from pipeline.predictor import InputSchema, Predictor
from pipeline.rules.rows import reason_of, row_errors
from pipeline.scoring.batches import Loader, OutputPlan, ScoreBatches, _tally_class, output_plan
from pipeline.scoring.output import _destination, _reporting, _write, count_output
from pipeline.spec import BatchServing, FilesSource, Spec
from pipeline.versioning import dataset_schema

__all__ = ["Loader", "OutputPlan", "RegistryLoader", "ScoreBatches", "ScoreResult", "ScoringError",
           "actor_pool_size", "count_output", "output_plan", "read_input", "reason_of",
           "row_errors", "score"]

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
