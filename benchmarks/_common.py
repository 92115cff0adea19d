"""Shared by the benchmark scripts: the deterministic synthetic dataset, the spec, and the plain
pandas + scikit-learn baseline that the project's path is measured against."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

NUMERIC = [f"f{i:02d}" for i in range(28)]
CATEGORIES = {
    "c0": ["a", "b", "c", "d"],
    "c1": ["red", "green", "blue", "cyan", "magenta", "yellow", "black"],
    "c2": [f"r{i:02d}" for i in range(12)],
    "c3": [f"s{i:02d}" for i in range(30)],
}
CATEGORICAL = list(CATEGORIES)
ID, TARGET = "row_id", "target"
RANGED = NUMERIC[:8]            # range [-10, 10]; a few values far outside
NOT_NULL = NUMERIC[:4]          # nullable: false (generated without nulls, a few broken)
ROWS_PER_FILE = 250_000
ROW_GROUP = 125_000
SEED = 20261127
FORMAT_VERSION = 1              # bump when the generator changes: the cache key includes it


def cache_dir() -> Path:
    base = os.environ.get("RAYLINE_BENCH_CACHE") or os.path.join(tempfile.gettempdir(),
                                                                  "rayline-bench")
    return Path(base)


def _chunk(start: int, rows: int):
    """Rows [start, start+rows) as an Arrow table, the same bits whatever the chunking around it
    (one generator per 250k-row file, seeded by its position)."""
    import pyarrow as pa

    rng = np.random.default_rng([SEED, start])
    cols: dict[str, object] = {}
    ids = np.arange(start, start + rows, dtype=np.int64)
    dup = rng.random(rows) < 0.0001                      # ~0.01% ids repeat the previous row's
    dup[0] = False
    ids[dup] = ids[np.flatnonzero(dup) - 1]
    cols[ID] = ids
    for j, name in enumerate(NUMERIC):
        x = rng.standard_normal(rows) * (1.0 + j % 5) + (j % 3)
        if name in RANGED:
            x = np.clip(x, -9.5, 9.5)
            x[rng.random(rows) < 0.0005] = 55.0          # out of range [-10, 10]
        if name in NOT_NULL:
            x[rng.random(rows) < 0.0002] = np.nan        # breaks nullable: false
        else:
            x[rng.random(rows) < 0.02] = np.nan          # an ordinary 2% of nulls
        cols[name] = pa.array(x, from_pandas=True)       # NaN -> null
    for k, (name, values) in enumerate(CATEGORIES.items()):
        codes = rng.integers(0, len(values), rows)
        labels = np.array(values, dtype=object)[codes]
        labels[rng.random(rows) < 0.01 + 0.01 * k] = None   # 1-4% nulls
        if name == "c0":
            labels[rng.random(rows) < 0.001] = "zz"      # not in the allowed values
        cols[name] = pa.array(labels, type=pa.string())
    score = np.nan_to_num(cols[NUMERIC[0]].to_numpy(zero_copy_only=False)) * 0.8 + rng.standard_normal(rows)
    cols[TARGET] = (score > 0.5).astype(np.int64)
    return pa.table(cols)


def dataset(rows: int) -> Path:
    """A directory of parquet files holding `rows` rows, generated once and cached. Written one
    file at a time: nothing close to the whole dataset is ever in memory."""
    import pyarrow.parquet as pq

    where = cache_dir() / f"synthetic-v{FORMAT_VERSION}-{rows}"
    done = where / "_COMPLETE"
    if done.exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index, start in enumerate(range(0, rows, ROWS_PER_FILE)):
        table = _chunk(start, min(ROWS_PER_FILE, rows - start))
        tmp = where / f".part-{index:05d}.parquet.tmp"
        pq.write_table(table, tmp, row_group_size=ROW_GROUP)
        os.replace(tmp, where / f"part-{index:05d}.parquet")
    done.write_text(f"{rows}\n")
    print(f"generated {rows:,} rows in {where} ({time.perf_counter() - started:.1f} s)", flush=True)
    return where


def spec_text(path: Path) -> str:
    """The benchmark's spec: expectations on several columns, standard_scaler on the numeric
    columns, one_hot on the categorical ones."""
    lines = [
        "name: bench_ingest_features",
        "sources:",
        "  - name: synthetic",
        "    type: files",
        f"    path: {path}",
        "    format: parquet",
        f"target: {TARGET}",
        "problem_type: classification",
        f"id_column: {ID}",
        "expectations:",
        "  on_failure: quarantine",
        "  max_bad_fraction: 0.05",
        "  columns:",
        f"    - {{column: {ID}, type: integer, nullable: false, unique: true}}",
        f"    - {{column: {TARGET}, values: [0, 1], nullable: false}}",
    ]
    for name in RANGED:
        extra = ", nullable: false" if name in NOT_NULL else ""
        lines.append(f"    - {{column: {name}, type: numeric, range: [-10, 10]{extra}}}")
    for name, values in CATEGORIES.items():
        lines.append(f"    - {{column: {name}, type: categorical, values: [{', '.join(values)}]}}")
    lines += [
        "transformations:",
        "  - name: scale",
        f"    columns: [{', '.join(NUMERIC)}]",
        "    method: standard_scaler",
        "  - name: encode",
        f"    columns: [{', '.join(CATEGORICAL)}]",
        "    method: one_hot",
    ]
    return "\n".join(lines) + "\n"


def load_spec(path: Path):
    from pipeline.spec import parse_spec

    return parse_spec(spec_text(path), "bench-spec.yaml", env={}, base_dir=str(path.parent))


def feature_inputs() -> list[str]:
    return NUMERIC + CATEGORICAL


def column_kinds() -> dict[str, str]:
    return {**{c: "numeric" for c in NUMERIC}, **{c: "categorical" for c in CATEGORICAL}}


# --------------------------------------------------------------------------- the baseline

def baseline_violations(df) -> dict[str, "np.ndarray"]:
    """The spec's expectations written directly in pandas: one boolean mask per rule."""
    import pandas as pd

    masks = {}
    ids = df[ID]
    masks[f"{ID}:type"] = ids.notna().to_numpy() & (pd.to_numeric(ids, errors="coerce") % 1 != 0).to_numpy()
    masks[f"{ID}:nullable"] = ids.isna().to_numpy()
    masks[f"{ID}:unique"] = (ids.duplicated(keep=False) & ids.notna()).to_numpy()
    masks[f"{TARGET}:values"] = df[TARGET].notna().to_numpy() & ~df[TARGET].isin([0, 1]).to_numpy()
    masks[f"{TARGET}:nullable"] = df[TARGET].isna().to_numpy()
    for name in RANGED:
        x = df[name]
        masks[f"{name}:type"] = x.notna().to_numpy() & pd.to_numeric(x, errors="coerce").isna().to_numpy()
        masks[f"{name}:range"] = ((x < -10) | (x > 10)).to_numpy()
        if name in NOT_NULL:
            masks[f"{name}:nullable"] = x.isna().to_numpy()
    for name, values in CATEGORIES.items():
        x = df[name]
        masks[f"{name}:values"] = x.notna().to_numpy() & ~x.isin(values).to_numpy()
    return masks


class BaselineFeatures:
    """What the brief's user writes: StandardScaler on the numbers, OneHotEncoder(handle_unknown=
    'ignore') on the categories, fitted, then both transforms stacked. (Not ColumnTransformer:
    its fit() runs fit_transform and throws the result away, which would slow the baseline.)
    The project also fills the scaled columns' remaining nulls with their training median; the
    baseline leaves NaN there, so it does a little less work."""

    def fit(self, df):
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        self.scaler = StandardScaler().fit(df[NUMERIC])
        self.encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(df[CATEGORICAL])
        return self

    def transform(self, df):
        return np.hstack([self.scaler.transform(df[NUMERIC]), self.encoder.transform(df[CATEGORICAL])])


def psutil_module():
    """psutil: installed, or the copy Ray ships (on sys.path once ray is imported)."""
    try:
        import psutil
    except ImportError:
        import ray  # noqa: F401  (adds ray/thirdparty_files to sys.path)
        import psutil
    return psutil


class TreeCPU:
    """CPU seconds (user + system) of this process and every process under it (the local Ray
    cluster's raylet, GCS and workers all start below the driver), including processes that
    exit before the stage ends: a background thread remembers each process's last reading."""

    def __init__(self, interval: float = 0.2):
        psutil = psutil_module()
        self._psutil = psutil
        self._me = psutil.Process()
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.read()
        threading.Thread(target=self._run, args=(interval,), daemon=True).start()

    def read(self) -> dict[int, float]:
        seen = {}
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                seen[(proc.pid, proc.create_time())] = t.user + t.system
            except self._psutil.Error:
                pass
        with self._lock:
            self._last.update(seen)
            return dict(self._last)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.read()

    @staticmethod
    def spent(before: dict, after: dict) -> float:
        return sum(v - before.get(k, 0.0) for k, v in after.items())


_TREE_CPU: "TreeCPU | None" = None


def tree_cpu() -> TreeCPU:
    global _TREE_CPU
    if _TREE_CPU is None:
        _TREE_CPU = TreeCPU()
    return _TREE_CPU


class Timer:
    """Wall seconds per stage and, with cpu=True, the CPU seconds the whole process tree spent
    in it (robust to other jobs on a shared machine, and what a per-core figure needs)."""

    def __init__(self, cpu: bool = False):
        self.stages: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._tree = tree_cpu() if cpu else None

    @contextmanager
    def stage(self, name: str):
        before = self._tree.read() if self._tree else None
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - started
            if self._tree:
                self.cpu[name] = self.cpu.get(name, 0.0) + TreeCPU.spent(before, self._tree.read())

    @property
    def total(self) -> float:
        return sum(self.stages.values())

    @property
    def total_cpu(self) -> float:
        return sum(self.cpu.values())


def median_stages(timers: list["Timer"], cpu: bool = False) -> dict[str, float]:
    """Per-stage medians (wall seconds, or CPU seconds with cpu=True) over repetitions."""
    import statistics

    return {k: statistics.median((t.cpu if cpu else t.stages)[k] for t in timers)
            for k in timers[0].stages}


def fmt_stages(stages: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:6.2f}s" for k, v in stages.items())
