"""The data workload: sources (or a pinned raw_data version) -> raw_data table -> validation
(pass / quarantine / fail) -> processed_data table. `rayline validate` stops here;
`rayline run` goes on to split, features and training."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pandas as pd

from pipeline.progress import Stages
from pipeline.spec import Spec, SpecError
from pipeline.validation import REASONS, ValidationFailed, ValidationReport, validate_dataset
from pipeline.versioning import QUARANTINE, TableStore, TableVersion, log_versions


@dataclass
class PreparedData:
    """The data stage's outcome: the rows that passed validation, the report, the versions."""
    frame: pd.DataFrame                       # rows that passed validation, in canonical order
    report: ValidationReport
    versions: dict[str, TableVersion] = field(default_factory=dict)
    raw_version: Optional[int] = None         # the raw_data version the run read or wrote

    @property
    def table_versions(self) -> dict[str, int]:
        """Table -> version this run read or wrote (the quarantine, appended to, aside)."""
        out = {name: v.version for name, v in self.versions.items() if name != QUARANTINE}
        if self.raw_version is not None:
            out["raw_data"] = self.raw_version
        return out

    @property
    def summary(self) -> dict:
        r = self.report
        return {"rows": r.rows, "passed": r.passed_rows, "quarantined": r.bad_rows,
                "rules": len(r.results), "failed_rules": [f"{x.column}:{x.rule}" for x in r.results if x.failed]}


def ingest(sources: list, origin, store: TableStore, stages: Stages, run_id: Optional[str],
           data_version: Optional[int]):
    """(Dataset, raw_data TableVersion or None): the sources, or raw_data pinned at data_version."""
    from pipeline.sources import read_sources

    with stages.stage("Ingest") as note:
        if data_version is not None:
            ds = store.read_table("raw_data", data_version).materialize()
            came_from = f"raw_data version {data_version}"
        else:
            ds = read_sources(sources, origin).materialize()
            came_from = f"{len(sources)} source(s)"
        note(f"{ds.count():,} rows x {len(ds.schema().names)} columns from {came_from}")
    raw = None
    if data_version is None and store.tracked("raw_data"):
        with stages.stage("Version raw_data") as note:
            raw = store.write_dataset("raw_data", ds, run_id)
            note(f"version {raw.version}, {raw.rows:,} rows, hash {raw.content_hash[:12]}")
    return ds, raw


def check_columns(spec: Spec, columns: list[str]) -> list[str]:
    """Spec names that are not columns of the data, each with its spec line."""
    from pipeline.formula import Formula

    have = set(columns)
    derived = {d.name for t in spec.transformations for d in (t.derived or [])}
    problems = []
    if spec.target not in have:
        problems.append(f"{spec.where('target')}: target column {spec.target!r} is not in the data")
    if spec.id_column and spec.id_column not in have:
        problems.append(f"{spec.where('id_column')}: id_column {spec.id_column!r} is not in the data")
    for i, name in enumerate(spec.features.include or []):
        if name not in have:
            problems.append(f"{spec.where('features', 'include', i)}: column {name!r} is not in the data")
    for i, t in enumerate(spec.transformations):
        for j, col in enumerate(t.columns or []):
            if col not in have and col not in derived:
                problems.append(f"{spec.where('transformations', i, 'columns', j)}: "
                                f"{t.name}: column {col!r} is not in the data")
        for j, d in enumerate(t.derived or []):
            missing = sorted(Formula.parse(d.formula).names - have - derived)
            if missing:
                problems.append(f"{spec.where('transformations', i, 'derived', j, 'formula')}: "
                                f"{d.name}: formula reads {', '.join(missing)}, not in the data")
    for i, col in enumerate(spec.evaluation.slices):
        if col not in have:
            problems.append(f"{spec.where('evaluation', 'slices', i)}: slice column {col!r} is not in the data")
    return problems


def prepare(spec: Spec, stages: Stages, run_id: Optional[str] = None,
            data_version: Optional[int] = None, log_to_mlflow: bool = True) -> PreparedData:
    """Ingest, version and validate. Raises SpecError (the spec names columns the data lacks)
    or ValidationFailed (after writing the report, and the quarantine when there is one)."""
    store = TableStore.of(spec.data_versioning, spec.name)
    ds, raw = ingest(spec.sources, spec.origin, store, stages, run_id, data_version)
    versions = {"raw_data": raw} if raw else {}
    problems = check_columns(spec, list(ds.schema().names))
    if problems:
        raise SpecError(problems)
    with stages.stage("Validate") as note:
        try:
            passed, bad, report = validate_dataset(ds, spec.expectations, spec.id_column, spec.origin)
        except ValidationFailed as exc:
            _record_validation(store, exc.report, exc.bad_rows, run_id, log_to_mlflow, versions)
            raise
        quarantine = _record_validation(store, report, bad, run_id, log_to_mlflow, versions)
        note(f"{report.passed_rows:,} passed, {report.bad_rows:,} quarantined"
             + (f" ({quarantine})" if quarantine else "") + f"; {len(report.results)} rules")
    frame = passed.to_pandas()
    if spec.id_column:
        # A canonical order, whatever order the sources delivered: the split depends on it.
        frame = frame.sort_values(spec.id_column, kind="stable", ignore_index=True)
    assert report.rows == report.passed_rows + report.bad_rows == len(frame) + len(bad)
    if store.tracked("processed_data"):
        with stages.stage("Version processed_data") as note:
            processed = store.write_frame("processed_data", frame, run_id)
            versions["processed_data"] = processed
            note(f"version {processed.version}, {processed.rows:,} rows, hash {processed.content_hash[:12]}")
    if log_to_mlflow:
        import mlflow

        log_versions(v for k, v in versions.items() if k != "raw_data")
        if data_version is not None:
            mlflow.log_param("data.raw_data.pinned_version", data_version)
    return PreparedData(frame=frame, report=report, versions=versions,
                        raw_version=raw.version if raw else data_version)


def _record_validation(store: TableStore, report: ValidationReport, bad: pd.DataFrame,
                       run_id: Optional[str], log_to_mlflow: bool,
                       versions: dict[str, TableVersion]) -> Optional[str]:
    """Report to MLflow; bad rows with their reasons to the quarantine table. Returns where the
    quarantine went, if anywhere."""
    from pipeline import registry

    where = None
    if len(bad):
        rows = bad.rename(columns={REASONS: "_reasons"}).copy()
        rows["_run_id"] = run_id or ""
        rows["_quarantined_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = rows.astype({c: "string" for c in rows.columns if rows[c].dtype == object})
        table = store.write_frame(QUARANTINE, rows, run_id, mode="append")
        versions[QUARANTINE] = table
        where = f"{table.path} v{table.version}"
    if log_to_mlflow:
        import mlflow

        if "raw_data" in versions:
            log_versions([versions["raw_data"]])
        registry.log_dict(report.to_dict(), "validation/report.json")
        mlflow.log_text(report.to_markdown(), "validation/report.md")
        mlflow.log_text(report.to_html(), "validation/report.html")
        mlflow.log_metrics({"data_rows": report.rows, "data_rows_passed": report.passed_rows,
                            "data_rows_quarantined": report.bad_rows})
        if len(bad):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "quarantine.parquet"
                bad.rename(columns={REASONS: "reasons"}).to_parquet(path)
                mlflow.log_artifact(str(path), "validation")
            mlflow.set_tag("rayline.quarantine", where or "")
    return where


def validate_only(spec: Spec, stages: Stages, verbose: bool = False,
                  data_version: Optional[int] = None) -> tuple[ValidationReport, str]:
    """`rayline validate`: ingest and validate in an MLflow run of their own. (report, run id)."""
    import mlflow

    from pipeline import execution, registry

    with stages.stage("Ray") as note:
        started = execution.ensure_ray(verbose=verbose)
        note("local cluster" if started else "connected")
    experiment_id = registry.configure_for(spec)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.name}-validate") as run:
        mlflow.set_tag("rayline.kind", "validate")
        registry.log_spec(spec)
        prepared = prepare(spec, stages, run_id=run.info.run_id, data_version=data_version)
    return prepared.report, run.info.run_id
