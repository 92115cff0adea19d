"""Sources: each spec source becomes a Ray Dataset; several are unioned by column name or joined."""

from __future__ import annotations

from pipeline.spec import Spec


class SourceError(RuntimeError):
    pass


def read_source(source, spec: Spec):
    if source.type == "files":
        from pipeline.sources.files import read_files
        return read_files(source)
    raise SourceError(f"{spec.where('sources')}: source type {source.type!r} is not available in "
                      "this version of rayline (files only for now)")


def read_sources(spec: Spec):
    """One Ray Dataset holding every source, in spec order."""
    datasets = []
    for index, source in enumerate(spec.sources):
        try:
            ds = read_source(source, spec)
        except SourceError:
            raise
        except Exception as exc:  # the reader's own error, with the source named
            label = source.name or f"sources[{index}]"
            raise SourceError(f"{spec.where('sources', index)}: reading {label} failed: "
                              f"{spec.redact(str(exc))}") from exc
        datasets.append((source, ds))
    combined = datasets[0][1]
    for source, ds in datasets[1:]:
        if source.join is not None:
            combined = combined.join(ds, join_type=_JOIN_TYPES[source.join.how],
                                     num_partitions=1, on=tuple(source.join.keys))
        else:
            combined = _union_by_name(combined, ds)
    return combined


_JOIN_TYPES = {"left": "left_outer", "right": "right_outer", "inner": "inner", "outer": "full_outer"}


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
