"""What every family trained through Ray Train shares (xgboost's XGBoostTrainer, the torch
families' TorchTrainer): the driver side (the arrays in the object store once, the scaling and
run configs from the plan, fault tolerance, the controller's poll) and the worker side (rank and
world size, the checkpoint to resume from, rank 0's checkpoint reports, the test crash hook).

Two things Ray Train does not do for us on a small node (benchmarks/train_xgboost.py measures
them): its controller takes one report per poll of the workers and polls every 2 s, so each
checkpoint held training up for up to 2 s and the end of a run was seen up to 2 s late: `fit`
runs with a 0.25 s poll (`fast_polling`). A poll is a few ms of work, and a slow one is waited
on, not counted as a failure (that takes 10 minutes).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from pipeline.models.base import TrainData, crash_once_for_test

# Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by
# default) and takes one report per poll from a queue of one: a worker reporting a checkpoint
# blocks until the previous one was taken.
POLL_INTERVAL_S = "0.25"
MAX_FAILURES = 2          # a dead worker restarts the group from the last checkpoint, twice
CHECKPOINTS_KEPT = 2


# --------------------------------------------------------------------------- the driver

def put_arrays(data: TrainData):
    """(X_train, y_train, X_val, y_val) in the object store, features as float32: one ray.put,
    each worker slices its rows (a Ray Data streaming split costs seconds at this size)."""
    import ray

    return ray.put((data.X_train.astype(np.float32), data.y_train,
                    data.X_val.astype(np.float32), data.y_val))


def fit(trainer_class, loop: Callable[[dict], None], config: dict[str, Any], data: TrainData,
        name: str):
    """One Ray Train run of `loop` on the plan's workers; returns Ray Train's Result (its
    checkpoint is the final report's)."""
    import ray.train

    plan = data.plan
    trainer = trainer_class(
        loop, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.num_workers, use_gpu=plan.use_gpu,
            resources_per_worker={"CPU": plan.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            storage_path=data.storage_path, name=f"{data.run_tag}-{name}",
            failure_config=ray.train.FailureConfig(max_failures=MAX_FAILURES),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT)))
    with fast_polling():
        return trainer.fit()


@contextmanager
def fast_polling():
    """RAY_TRAIN_HEALTH_CHECK_INTERVAL_S for the trainers started inside (Ray Train hands the
    driver's value to its controller), unless the environment sets it."""
    key = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    if key in os.environ:
        yield
        return
    os.environ[key] = POLL_INTERVAL_S
    try:
        yield
    finally:
        os.environ.pop(key, None)


# --------------------------------------------------------------------------- a worker

def rank_and_world() -> tuple[int, int]:
    import ray.train

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def arrays(config: dict[str, Any]):
    import ray

    return ray.get(config["data"])


@contextmanager
def restored() -> Iterator[Optional[Path]]:
    """The folder of the checkpoint a restarted worker group resumes from, or None."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as directory:
        yield Path(directory)


def report(metrics: dict[str, Any], rank: int, write: Callable[[Path], None]) -> None:
    """Every worker reports (Ray Train pairs the reports of one round); rank 0 also writes a
    checkpoint with `write(folder)`."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def crash_if_asked(config: dict[str, Any], key: str, counter: int, rank: int) -> None:
    """Tests only: `config[key]` (e.g. `_test_kill_after_round`) kills rank 0 once at that
    round or epoch; the marker file records that it happened."""
    kill_after = config.get(key)
    if (kill_after is not None and counter == kill_after and rank == 0
            and not os.path.exists(config["_test_kill_marker"])):
        crash_once_for_test(config["_test_kill_marker"], counter)
