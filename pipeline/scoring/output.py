"""Where scores go and what came out: a parquet folder per run or a Delta table appended to, the
rows and errors counted back from the output, and the progress line while it is written."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional


from pipeline.rules.rows import reason_of


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
