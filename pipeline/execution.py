"""Connecting to Ray and choosing how to use it (the execution plan).

`ensure_ray` attaches to RAY_ADDRESS (a cluster, or the one `ray job submit` runs us in) or starts
a local Ray; `plan_training` sizes Ray Train from what the cluster reports, keeping a CPU free for
Ray Data (a worker group that holds every CPU starves the data pipeline feeding it, and hangs).
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING

from pipeline.models.base import TrainPlan

if TYPE_CHECKING:
    from pipeline.spec import Scaling

log = logging.getLogger("rayline")


def ensure_ray(address: str | None = None, verbose: bool = False) -> bool:
    """Initialise Ray once. Returns True when this call started a new local cluster."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    # "local" starts a fresh instance: a bare ray.init() would attach to whatever cluster
    # `ray start` last recorded on this machine, even one that has since died.
    ray.init(
        address=address or "local",
        logging_level=logging.INFO if verbose else logging.WARNING,
        log_to_driver=verbose,
        include_dashboard=False if address is None else None,
        configure_logging=True,
    )
    _quiet_ray_data(verbose)
    return address is None


def _quiet_ray_data(verbose: bool) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    # Row order feeds the seeded split: the same data must reach it in the same order every run.
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("ray.train").setLevel(logging.INFO if verbose else logging.WARNING)


def cluster_shape() -> tuple[float, int, float]:
    """(CPUs free for new work, alive nodes, total GPUs) as Ray reports them.

    Plans are sized on the CPUs free now, not the cluster's total: on a shared cluster Serve
    replicas, other jobs' actors and a running search hold CPUs this run cannot have, and a
    worker group sized on the total waits forever for slots that never free."""
    import ray

    resources = ray.cluster_resources()
    total = float(resources.get("CPU", 1))
    free = float(ray.available_resources().get("CPU", 0.0))
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return min(total, max(1.0, free)), max(1, nodes), float(resources.get("GPU", 0))


def describe_cluster(started: bool, cpus: float, nodes: int) -> str:
    """The stage note for the Ray stage: where the run is and what it may use (cpus, nodes:
    from cluster_shape)."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 1))
    where = "local cluster" if started else "connected"
    held = f" ({total - cpus:g} of {total:g} held by other work)" if total - cpus >= 0.5 else ""
    return f"{where}: {cpus:g} CPUs free{held} on {nodes} node(s)"


def plan_training(scaling: "Scaling", cpus: float, nodes: int, gpus: float) -> TrainPlan:
    """How many Ray Train workers, and how big, for one training run. The reason says what was
    chosen and, where the spec asked for more than fits, what was cut and why."""
    spare = max(1.0, cpus - 1.0)  # one CPU stays with Ray Data
    if scaling.use_gpu and gpus < 1:
        raise RuntimeError("scaling.use_gpu is true but the Ray cluster reports no GPU")
    reasons: list[str] = []
    if scaling.num_workers == "auto":
        workers = 1 if nodes == 1 else nodes
        reasons.append("one multi-threaded worker: a single node gains nothing from data-parallel "
                       "workers" if workers == 1 else f"one worker per node across {nodes} nodes")
    else:
        workers = scaling.num_workers
        reasons.append("scaling from the spec")
    if scaling.cpus_per_worker == "auto":
        per = max(1.0, math.floor(spare / workers))
    else:
        per = float(scaling.cpus_per_worker)
        if per > spare:
            reasons.append(f"cpus_per_worker {per:g} cut to {spare:g}: the cluster has {cpus:g} CPUs "
                           "and one stays free for Ray Data")
            per = spare
    if workers * per > spare:
        fitting = max(1, int(spare // per))
        # The clamp replaces the opening reason (it no longer describes the plan); cuts stay.
        reasons = reasons[1:] + [f"spec asks {workers} x {per:g} CPU but the cluster has {cpus:g} "
                                 f"CPUs and one stays free for Ray Data: {fitting} worker(s)"]
        workers = fitting
    if scaling.use_gpu and workers > int(gpus):
        reasons.append(f"{workers} worker(s) cut to {int(gpus)}: one GPU each and the cluster has {gpus:g}")
        workers = int(gpus)
    return TrainPlan(num_workers=workers, cpus_per_worker=per, use_gpu=scaling.use_gpu,
                     reason="; ".join(reasons))


def quiet_libraries(verbose: bool = False) -> None:
    """Keep the terminal to our stage lines: MLflow's progress bars and advisory warnings, and
    Ray Data's deprecation notes, are noise in a CLI run (`--verbose` shows them)."""
    if verbose:
        return
    import warnings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for module in ("mlflow", "ray", "great_expectations", "xgboost", "sklearn"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    warnings.filterwarnings("ignore", message=r".*(type hints to the `predict`|Inferred schema contains integer).*")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
