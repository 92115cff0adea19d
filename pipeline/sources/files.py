"""Files source: parquet, csv, json from local paths, globs, s3:// or gs://, read with Ray Data."""

from __future__ import annotations

import glob
import os

from pipeline.spec import FilesSource


def read_files(source: FilesSource):
    import ray.data

    paths = _expand(source.path)
    fmt = source.inferred_format()
    if fmt == "parquet":
        return ray.data.read_parquet(paths)
    if fmt == "csv":
        from pyarrow import csv

        # Empty cells are missing values, in text columns too (Arrow keeps "" otherwise).
        options = csv.ConvertOptions(strings_can_be_null=True)
        return ray.data.read_csv(paths, convert_options=options)
    return ray.data.read_json(paths)


def _expand(path: str) -> list[str] | str:
    if "://" in path:
        return path  # Ray Data's filesystem layer expands remote globs itself
    if any(ch in path for ch in "*?["):
        matches = sorted(glob.glob(path))
        if not matches:
            raise FileNotFoundError(f"no files match {path}")
        return matches
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    return path
