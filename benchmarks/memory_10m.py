"""Claim: rayline's data path streams. 10,000,000 rows go through read -> Great Expectations
validation -> FeaturePipeline -> transformed batches with the peak memory of the whole process
tree (driver + local Ray cluster) under 4 GiB.

    .venv/bin/python benchmarks/memory_10m.py [--rows 10000000] [--limit-gib 4]

What runs is the streaming path that exists today, built from the project's own functions:

  0. the dataset: `pipeline.sources.files.read_files` (lazy; `read_sources` materialises, which
     is what `rayline run` does today and cannot stay under the limit at this size);
  1. `pipeline.validation.flag_dataset`: the values of `unique` columns seen twice (a streamed
     pass that reads only those columns), then the GE suite per block, lazily;
  2. validation report: the flagged rows stream through a filter; only the bad rows reach the
     driver, where `report_from_bad_rows` builds the report (rows in = passed + bad);
  3. fit: `FeaturePipeline.fit` on the passed rows among the first --fit-rows rows (the fit is
     a pandas fit in the driver; on all 10M rows its input alone would be ~2.7 GB);
  4. features: passed rows -> `FeaturePipeline.transform_table` as Ray Data map_batches, every
     transformed batch consumed by the driver (row count and a checksum), none kept.

Steps 2 and 4 each validate the data (two streaming passes, no copy of the data held
anywhere). Three settings, printed at the start, keep the streaming within the limit on this
2-CPU machine (each is a flag; all of them are configuration, not code):

  --object-store-gib 1   Ray Data's object-store budget (its default is half the object store,
                         i.e. up to ~15% of RAM in blocks in flight);
  --block-mib 32         Ray Data's target block size (default 128 MiB): a worker holds a block
                         and its validation and feature intermediates at once;
  allocators             ARROW_DEFAULT_MEMORY_POOL=system and glibc malloc tuning in the Ray
                         workers' environment (--default-allocators leaves them alone): with the
                         defaults a worker keeps ~0.3 GB of freed memory resident for reuse.

Memory is sampled every --interval seconds as the proportional set size (PSS) of every process
in the tree, summed: shared pages (Ray's object store in /dev/shm, mapped by the raylet and the
workers) count once. The last line is

    memory_10m: peak_gib=<peak total PSS> limit_gib=<limit> ok=<true|false> rows=<n> seconds=<wall>
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

GIB = 1024 ** 3
ALLOCATOR_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "2",
                 "MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "16777216"}


class MemorySampler(threading.Thread):
    """Peak of the summed PSS (and, for reference, summed RSS) of this process and all below it."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        psutil = C.psutil_module()
        self._psutil = psutil
        self.interval = interval
        self.me = psutil.Process()
        self.stop_event = threading.Event()
        self.peak_pss = 0
        self.peak_rss = 0
        self.peak_driver = 0
        self.peak_parts: dict[str, int] = {}
        self.peak_counts: dict[str, int] = {}
        self.stage = "start"
        self.peak_by_stage: dict[str, int] = {}
        self.samples = 0

    def sample(self) -> int:
        psutil = self._psutil
        parts: dict[str, int] = {}
        counts: dict[str, int] = {}
        detail: list[tuple[int, str]] = []
        total = rss = 0
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
                name = "driver" if proc.pid == self.me.pid else _role(proc)
            except psutil.Error:
                continue
            total += info.pss
            rss += info.rss
            parts[name] = parts.get(name, 0) + info.pss
            counts[name] = counts.get(name, 0) + 1
            detail.append((info.pss, f"{proc.name()[:40]} pss {info.pss / GIB:.2f} uss {info.uss / GIB:.2f} "
                                     f"shared {(info.pss - info.uss) / GIB:.2f}"))
        self.samples += 1
        if total > self.peak_pss:
            self.peak_pss, self.peak_parts, self.peak_counts = total, parts, counts
            self.peak_detail = sorted(detail, reverse=True)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_driver = max(self.peak_driver, parts.get("driver", 0))
        self.peak_by_stage[self.stage] = max(self.peak_by_stage.get(self.stage, 0), total)
        return total

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)


def _role(proc) -> str:
    name = proc.name()
    cmd = " ".join(proc.cmdline()[:3])
    if "raylet" in name or "raylet" in cmd:
        return "raylet (+ object store)"
    if "gcs_server" in name:
        return "gcs_server"
    if name.startswith("ray::") or "default_worker" in cmd:
        return "ray workers"
    return "other ray processes"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--fit-rows", type=int, default=1_000_000)
    parser.add_argument("--limit-gib", type=float, default=4.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--batch-rows", type=int, default=0,
                        help="rows per FeaturePipeline call (0: whole blocks)")
    parser.add_argument("--block-mib", type=float, default=32,
                        help="Ray Data's target block size (0: its default, 128 MiB)")
    parser.add_argument("--default-allocators", action="store_true",
                        help="leave Arrow's mimalloc pool and glibc malloc's defaults in the workers")
    parser.add_argument("--object-store-gib", type=float, default=1.0,
                        help="Ray Data's object-store budget for this run's pipelines "
                             "(0: Ray Data's default, half the object store)")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_worker_niceness", "0")  # see ingest_features.py
    if not args.default_allocators:
        # Set before Ray starts, so every worker inherits them: Arrow allocates from malloc
        # instead of its mimalloc pool, and malloc returns large freed blocks to the system
        # instead of keeping them in per-thread arenas. A worker that has validated and
        # transformed a block otherwise keeps ~0.3 GB more resident for reuse.
        for name, value in ALLOCATOR_ENV.items():
            os.environ.setdefault(name, value)
    path = C.dataset(args.rows)
    spec = C.load_spec(path)

    import pyarrow.compute as pc
    from ray.data.expressions import col, lit

    from pipeline.execution import ensure_ray, quiet_libraries
    from pipeline.features import FeaturePipeline
    from pipeline.sources.files import read_files
    from pipeline.validation import REASONS, flag_dataset, report_from_bad_rows, table_checks

    quiet_libraries()
    ensure_ray()
    import ray
    from ray.data import DataContext

    ctx = DataContext.get_current()
    if args.block_mib:
        ctx.target_max_block_size = int(args.block_mib * 2 ** 20)
    if args.object_store_gib:
        # Ray Data would otherwise let half of the object store (a third of RAM) fill with
        # blocks in flight: bounded here, its streaming executor applies backpressure instead.
        ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
            object_store_memory=int(args.object_store_gib * GIB))

    sampler = MemorySampler(args.interval)
    idle = sampler.sample()
    sampler.peak_pss = sampler.peak_rss = sampler.peak_driver = 0
    print(f"ray: local, {ray.cluster_resources().get('CPU', 0):g} CPUs, object store "
          f"{ray.cluster_resources().get('object_store_memory', 0) / GIB:.1f} GiB (reserved, used on "
          f"demand); Ray Data budget {ctx.execution_options.resource_limits.object_store_memory}, "
          f"target block {ctx.target_max_block_size / 2 ** 20:g} MiB; allocators "
          f"{'default' if args.default_allocators else ALLOCATOR_ENV}; "
          f"idle process tree PSS {idle / GIB:.2f} GiB", flush=True)
    sampler.start()
    t = C.Timer()

    def stage(name):
        sampler.stage = name
        return t.stage(name)

    started = time.perf_counter()
    with stage("plan + unique pass"):
        ds = read_files(spec.sources[0])
        total = ds.count()                                  # parquet metadata, no data read
        rules, flagged = flag_dataset(ds, spec.expectations)
    with stage("validate (pass 1)"):
        bad = flagged.filter(expr=col(REASONS) != lit("")).to_pandas()
        failures = table_checks(spec.expectations, total, list(ds.schema().names), spec.where)
        report = report_from_bad_rows(rules, total, bad, spec.id_column, failures)
    passed = flagged.filter(expr=col(REASONS) == lit("")).drop_columns([REASONS])
    with stage("fit (sample)"):
        pipeline = FeaturePipeline.from_spec(spec.transformations, C.feature_inputs(), C.column_kinds())
        sample = (flagged.limit(args.fit_rows).filter(expr=col(REASONS) == lit(""))
                  .select_columns(pipeline.required_columns).to_pandas())
        pipeline.fit(sample)
        fit_rows = len(sample)
        del sample
    with stage("features (pass 2)"):
        out_rows, checksum = 0, 0.0
        features = passed.map_batches(pipeline.transform_table, batch_format="pyarrow",
                                      batch_size=args.batch_rows or None)
        for batch in features.iter_batches(batch_format="pyarrow", batch_size=None,
                                           prefetch_batches=1):
            out_rows += batch.num_rows
            checksum += pc.sum(batch.column(0)).as_py() or 0.0
    elapsed = time.perf_counter() - started
    sampler.stop_event.set()
    sampler.join()
    sampler.sample()

    assert report.rows == report.passed_rows + report.bad_rows == total
    assert out_rows == report.passed_rows, (out_rows, report.passed_rows)
    print(f"rows {total:,}: {report.passed_rows:,} passed, {report.bad_rows:,} bad "
          f"({len(report.results)} rules, {sum(r.failed for r in report.results):,} rule failures); "
          f"fit on {fit_rows:,} passed rows; {out_rows:,} x {len(pipeline.output_columns)} features "
          f"consumed (checksum of column 0: {checksum:.3f}; mean {checksum / max(out_rows, 1):.4f})")
    print("stages: " + "  ".join(f"{k} {v:.1f}s (peak {sampler.peak_by_stage.get(k, 0) / GIB:.2f} GiB)"
                                 for k, v in t.stages.items()))
    print(f"peak total PSS {sampler.peak_pss / GIB:.2f} GiB over {sampler.samples} samples "
          f"(every {args.interval:g} s); at that moment: "
          + ", ".join(f"{k} ({sampler.peak_counts.get(k, 0)}) {v / GIB:.2f}"
                      for k, v in sorted(sampler.peak_parts.items(), key=lambda kv: -kv[1])))
    if os.environ.get("RAYLINE_BENCH_DEBUG"):
        for _, text in sampler.peak_detail:
            print("   ", text)
    print(f"peak driver PSS {sampler.peak_driver / GIB:.2f} GiB; peak summed RSS "
          f"{sampler.peak_rss / GIB:.2f} GiB (counts shared object-store pages once per process "
          "that maps them, so it overstates)")
    ok = sampler.peak_pss < args.limit_gib * GIB
    print(f"memory_10m: peak_gib={sampler.peak_pss / GIB:.2f} limit_gib={args.limit_gib:g} "
          f"ok={'true' if ok else 'false'} rows={total} seconds={elapsed:.0f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
