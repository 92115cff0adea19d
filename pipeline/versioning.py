"""Data versions as Delta Lake tables: raw_data, processed_data, feature_store (and quarantine).

Each run writes a full snapshot of each tracked table (Delta `overwrite`, so every earlier
version stays readable by time travel), records the table's version, row count and a content
hash in MLflow, and `--data-version N` reads raw_data at version N instead of the sources.

The content hash is order-sensitive and batch-independent: one 64-bit hash per row
(pandas.util.hash_pandas_object), fed in row order to SHA-256 together with the column names.
The same rows in the same order give the same hash however the data was chunked.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

import pandas as pd
import pyarrow as pa

from pipeline.errors import NotFound

if TYPE_CHECKING:
    from pipeline.spec import DataVersioning

TABLES = ("raw_data", "processed_data", "feature_store")
QUARANTINE = "quarantine"


@dataclass(frozen=True)
class TableVersion:
    table: str
    path: str
    version: int
    rows: int
    content_hash: str

    def as_params(self) -> dict[str, Any]:
        prefix = f"data.{self.table}"
        return {f"{prefix}.version": self.version, f"{prefix}.rows": self.rows,
                f"{prefix}.hash": self.content_hash, f"{prefix}.path": self.path}


class VersionError(NotFound):
    """A data table or version that is not there."""

    title = "no such data version"


@dataclass(frozen=True)
class TableStore:
    """The spec's versioned tables: `data_versioning` (where, which tables) and the spec's name
    (each spec's tables sit in a folder of their own). The data and training stages take this,
    not the spec."""
    storage: str
    name: str
    tracking: tuple[str, ...] = TABLES

    @classmethod
    def of(cls, versioning: "DataVersioning", name: str) -> "TableStore":
        return cls(versioning.storage, name, tuple(versioning.tracking))

    def path(self, table: str) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}/{table}"

    def tracked(self, table: str) -> bool:
        return table in self.tracking

    def storage_options(self) -> Optional[dict[str, str]]:
        if self.storage.startswith("s3://"):
            import os

            # deltalake reads the usual AWS variables; a local S3 endpoint needs plain HTTP allowed.
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
            options = {"AWS_ALLOW_HTTP": "true"} if endpoint and endpoint.startswith("http://") else {}
            if endpoint:
                options["AWS_ENDPOINT_URL"] = endpoint
            options.setdefault("AWS_S3_ALLOW_UNSAFE_RENAME", "true")
            return options
        return None

    def write_batches(self, table: str, schema: pa.Schema, batches: Iterable[pd.DataFrame],
                      run_id: Optional[str], mode: str = "overwrite") -> TableVersion:
        return write_batches(self, table, schema, batches, run_id, mode)

    def write_dataset(self, table: str, ds, run_id: Optional[str]) -> TableVersion:
        """A Ray Dataset as a new version of `table` (streamed through the driver, in order)."""
        schema = dataset_schema(ds)
        batches = ds.iter_batches(batch_format="pandas", batch_size=65_536, prefetch_batches=1)
        return write_batches(self, table, schema, batches, run_id)

    def write_frame(self, table: str, frame: pd.DataFrame, run_id: Optional[str],
                    mode: str = "overwrite") -> TableVersion:
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
        chunks = (frame.iloc[i:i + 262_144] for i in range(0, max(len(frame), 1), 262_144))
        return write_batches(self, table, schema, chunks, run_id, mode=mode)

    def read_table(self, table: str, version: Optional[int] = None):
        """Ray Dataset of `table` at `version` (default: the latest)."""
        import ray.data
        from deltalake import DeltaTable

        path = self.path(table)
        try:
            latest = DeltaTable(path, storage_options=self.storage_options()).version()
        except Exception as exc:  # deltalake raises TableNotFoundError and friends
            raise VersionError(f"no {table} table at {path}: run `rayline run` first ({exc})") from None
        if version is not None and not 0 <= version <= latest:
            raise VersionError(f"{table} has versions 0..{latest}; there is no version {version}")
        return ray.data.read_delta(path, version=version, storage_options=self.storage_options())

    def history(self, table: str) -> list["HistoryRow"]:
        return history(self, table)


class ContentHash:
    """Running hash over batches of rows (see the module docstring)."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._columns: Optional[list[str]] = None
        self.rows = 0

    def update(self, frame: pd.DataFrame) -> None:
        if self._columns is None:
            self._columns = list(frame.columns)
            self._sha.update("\x1f".join(self._columns).encode())
        if len(frame):
            row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
            self._sha.update(row_hashes.tobytes())
            self.rows += len(frame)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def frame_hash(frame: pd.DataFrame) -> str:
    digest = ContentHash()
    digest.update(frame)
    return digest.hexdigest()


def _commit(run_id: Optional[str], table: str):
    from deltalake import CommitProperties

    return CommitProperties(custom_metadata={
        "rayline.run_id": run_id or "", "rayline.table": table,
        "rayline.written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def _mkdirs(path: str) -> None:
    if "://" not in path:
        import os
        os.makedirs(path, exist_ok=True)


def write_batches(store: TableStore, table: str, schema: pa.Schema, batches: Iterable[pd.DataFrame],
                  run_id: Optional[str], mode: str = "overwrite") -> TableVersion:
    """Stream pandas batches into a new version of `table`, hashing them on the way.

    One writer in this process: the data streams through once, in order (so the hash is the
    data's), and memory stays at about one batch."""
    from deltalake import DeltaTable, write_deltalake

    digest = ContentHash()

    def record_batches() -> Iterator[pa.RecordBatch]:
        for frame in batches:
            digest.update(frame)
            yield from pa.Table.from_pandas(frame, schema=schema, preserve_index=False).to_batches()

    path = store.path(table)
    _mkdirs(path)
    reader = pa.RecordBatchReader.from_batches(schema, record_batches())
    write_deltalake(path, reader, mode=mode, schema_mode="overwrite" if mode == "overwrite" else "merge",
                    storage_options=store.storage_options(), commit_properties=_commit(run_id, table))
    version = DeltaTable(path, storage_options=store.storage_options()).version()
    return TableVersion(table, path, int(version), digest.rows, digest.hexdigest())


def dataset_schema(ds) -> pa.Schema:
    """The Arrow schema of a Ray Dataset (Ray reports numpy dtypes for some blocks)."""
    schema = ds.schema()
    base = getattr(schema, "base_schema", None)
    if isinstance(base, pa.Schema):
        return base
    return pa.schema([(name, pa.from_numpy_dtype(t) if not isinstance(t, pa.DataType) else t)
                      for name, t in zip(schema.names, schema.types)])


@dataclass
class HistoryRow:
    table: str
    version: int
    timestamp: str
    operation: str
    rows: Optional[int]
    run_id: str


def history(store: TableStore, table: str) -> list[HistoryRow]:
    from deltalake import DeltaTable

    path = store.path(table)
    try:
        entries = DeltaTable(path, storage_options=store.storage_options()).history()
    except Exception:
        return []
    rows = []
    for entry in entries:
        metrics = entry.get("operationMetrics") or {}
        written = metrics.get("num_added_rows", metrics.get("numOutputRows"))
        stamp = entry.get("timestamp")
        when = (datetime.fromtimestamp(stamp / 1000, timezone.utc).isoformat(timespec="seconds")
                if isinstance(stamp, (int, float)) else str(stamp))
        rows.append(HistoryRow(table=table, version=int(entry.get("version", -1)), timestamp=when,
                               operation=str(entry.get("operation", "")),
                               rows=int(written) if written is not None else None,
                               run_id=str(entry.get("rayline.run_id", ""))))
    return sorted(rows, key=lambda r: r.version)


def log_versions(versions: Iterable[TableVersion]) -> None:
    import mlflow

    for v in versions:
        mlflow.log_params(v.as_params())


def versions_as_dicts(versions: Iterable[TableVersion]) -> list[dict]:
    return [asdict(v) for v in versions]


def all_versions(store: TableStore, connect: Optional[Callable[[], Any]] = None) -> list[dict]:
    """Every version of every table, with the content hash and row count MLflow recorded for the
    run that wrote it (when that run is in the tracking store). `connect()` points MLflow at
    that store; it is called only when some version names a run."""
    rows = [h for table in (*TABLES, QUARANTINE) for h in history(store, table)]
    run_ids = {r.run_id for r in rows if r.run_id}
    if run_ids and connect is not None:
        connect()
    recorded = _recorded_params(run_ids)
    out = []
    for r in rows:
        params = recorded.get(r.run_id, {})
        prefix = f"data.{r.table}"
        same_version = params.get(f"{prefix}.version") == str(r.version)
        out.append({"table": r.table, "version": r.version, "timestamp": r.timestamp,
                    "operation": r.operation, "run_id": r.run_id,
                    "rows": int(params[f"{prefix}.rows"]) if same_version else r.rows,
                    "hash": params.get(f"{prefix}.hash") if same_version else None})
    return out


def _recorded_params(run_ids: set[str]) -> dict[str, dict[str, str]]:
    if not run_ids:
        return {}
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    found = {}
    for run_id in run_ids:
        try:
            found[run_id] = client.get_run(run_id).data.params
        except MlflowException:
            continue
    return found
