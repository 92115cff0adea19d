"""Sources: each spec source becomes a Ray Dataset; several are unioned by column name or joined.

One module per kind: `files` (parquet/csv/json, local or s3:// / gs://), `database` (any
SQLAlchemy URL through Ray Data's read_sql) and `api` (HTTP JSON, fetched in the driver).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from pipeline.errors import RaylineError

if TYPE_CHECKING:
    from pipeline.spec import Origin, Source


class SourceError(RaylineError, RuntimeError):
    """A source that cannot be read; the message names the source and never a secret."""

    title = "a source could not be read"


def read_source(source: "Source", origin: "Origin"):
    """One source as a lazy Ray Dataset."""
    if source.type == "files":
        from pipeline.sources.files import read_files
        return read_files(source)
    if source.type == "database":
        from pipeline.sources.database import read_database
        return read_database(source)
    if source.type == "api":
        from pipeline.sources.api import read_api
        return read_api(source)
    raise SourceError(f"{origin.where('sources')}: source type {source.type!r} is not available in "
                      "this version of rayline")


def read_sources(sources: "Sequence[Source]", origin: "Origin"):
    """One Ray Dataset holding every source, in spec order. `origin` (the spec's) names the
    source's line and masks its secrets in errors."""
    datasets = []
    for index, source in enumerate(sources):
        try:
            # Materialised here so that a failing read names its source, not a Ray task.
            ds = read_source(source, origin).materialize()
        except SourceError:
            raise
        except Exception as exc:  # the reader's own error, with the source named
            label = source.name or f"sources[{index}]"
            raise SourceError(f"{origin.where('sources', index)}: reading {label} ({source.type}) "
                              f"failed: {origin.redact(_message(exc))}") from exc
        datasets.append((source, ds))
    combined = datasets[0][1]
    for index, (source, ds) in enumerate(datasets[1:], start=1):
        if source.join is not None:
            try:
                combined = _join(combined, ds, source)
            except Exception as exc:
                label, keys = source.name or f"sources[{index}]", ", ".join(source.join.keys)
                raise SourceError(f"{origin.where('sources', index, 'join')}: joining {label} on {keys} "
                                  f"failed: {origin.redact(_message(exc))}") from exc
        else:
            combined = _union_by_name(combined, ds)
    return combined


_JOIN_TYPES = {"left": "left outer", "right": "right outer", "inner": "inner", "outer": "full outer"}
BLOCK_ROWS = 100_000


def arrow_dataset(table):
    """A Ray Dataset over an Arrow table held by the driver, in blocks that map_batches can spread."""
    import ray.data

    if table.num_rows <= BLOCK_ROWS:
        return ray.data.from_arrow(table)
    return ray.data.from_arrow([table.slice(start, BLOCK_ROWS)
                                for start in range(0, table.num_rows, BLOCK_ROWS)])


def _join(left, right, source):
    """An Arrow hash join in the driver. Ray Data's Dataset.join needs polars in every worker and
    a shuffle; the rows come to the driver for the split anyway, so the driver joins them."""
    import pyarrow as pa
    import ray

    def table(ds):
        return pa.concat_tables(ray.get(ds.to_arrow_refs()), promote_options="permissive")

    joined = join_tables(table(left), table(right), list(source.join.keys), source.join.how,
                         source.name)
    return arrow_dataset(joined)


def join_tables(left, right, keys: list[str], how: str, name: str | None = None):
    """left JOIN right USING (keys); a right column whose name is taken gets `_<name>` appended."""
    for side, table in (("the sources above", left), (name or "the joined source", right)):
        missing = [k for k in keys if k not in table.column_names]
        if missing:
            raise ValueError(f"{side} {'has' if len(missing) == 1 else 'have'} no column "
                             f"{', '.join(missing)} (columns: {', '.join(table.column_names)})")
    return left.join(right, keys=keys, join_type=_JOIN_TYPES[how],
                     right_suffix=f"_{name}" if name else "_right", use_threads=True)


def _message(exc: BaseException) -> str:
    """The error that started it: Ray wraps a read task's exception in its own."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)  # RayTaskError
        if isinstance(cause, BaseException):
            exc = cause
        elif type(exc).__module__.startswith("ray.") and exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            break
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _union_by_name(left, right):
    """Ray's union needs equal schemas: align both sides to the union of their columns."""
    left_cols, right_cols = left.schema().names, right.schema().names
    columns = list(dict.fromkeys([*left_cols, *right_cols]))

    def align(batch, cols=tuple(columns)):
        for col in cols:
            if col not in batch:
                batch[col] = None
        return batch[list(cols)]

    if list(left_cols) != columns:
        left = left.map_batches(align, batch_format="pandas")
    if list(right_cols) != columns:
        right = right.map_batches(align, batch_format="pandas")
    return left.union(right)
