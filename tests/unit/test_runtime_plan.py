"""pipeline._internal.execution.plan_training: Ray Train sizing from the cluster's shape, no Ray needed."""

from __future__ import annotations

import pytest

from pipeline.execution import TrainPlan, plan_training
from pipeline.spec import Scaling, parse_spec

SINGLE_NODE = "one multi-threaded worker: a single node gains nothing from data-parallel workers"


def plan(cpus: float, nodes: int, gpus: float = 0, **scaling) -> TrainPlan:
    return plan_training(Scaling(**scaling), cpus, nodes, gpus)


def used(p: TrainPlan) -> float:
    return p.num_workers * p.cpus_per_worker


# --------------------------------------------------------------------------- auto

def test_auto_two_cpus_one_node():
    p = plan(2, 1)
    assert (p.num_workers, p.cpus_per_worker, p.use_gpu) == (1, 1.0, False)
    assert p.reason == SINGLE_NODE
    assert p.threads == 1


def test_auto_four_cpus_one_node_keeps_one_cpu_for_ray_data():
    p = plan(4, 1)
    assert (p.num_workers, p.cpus_per_worker) == (1, 3)
    assert used(p) == 3 < 4
    assert p.reason == SINGLE_NODE
    assert p.threads == 3


def test_auto_sixteen_cpus_four_nodes_one_worker_per_node():
    p = plan(16, 4)
    assert (p.num_workers, p.cpus_per_worker) == (4, 3)   # floor(15 / 4)
    assert used(p) == 12 <= 15
    assert p.reason == "one worker per node across 4 nodes"
    assert p.threads == 3


@pytest.mark.parametrize("cpus, nodes, workers, per", [
    (1, 1, 1, 1.0), (8, 1, 1, 7), (64, 1, 1, 63), (8, 2, 2, 3), (3, 2, 2, 1.0), (100, 10, 10, 9),
])
def test_auto_shapes(cpus, nodes, workers, per):
    p = plan(cpus, nodes)
    assert (p.num_workers, p.cpus_per_worker) == (workers, per)
    assert used(p) <= max(1, cpus - 1)


def test_auto_workers_with_fixed_cpus_per_worker():
    p = plan(8, 1, cpus_per_worker=2)
    assert (p.num_workers, p.cpus_per_worker) == (1, 2.0)
    assert p.reason == SINGLE_NODE
    assert p.threads == 2


def test_fractional_cpus_per_worker_threads():
    p = plan(8, 1, num_workers=2, cpus_per_worker=2.5)
    assert (p.num_workers, p.cpus_per_worker) == (2, 2.5)
    assert p.threads == 2


# --------------------------------------------------------------------------- spec overrides

def test_override_that_fits_is_kept():
    p = plan(16, 4, num_workers=2, cpus_per_worker=2)
    assert (p.num_workers, p.cpus_per_worker, p.use_gpu) == (2, 2.0, False)
    assert p.reason == "scaling from the spec"


def test_override_filling_every_spare_cpu_fits():
    p = plan(4, 1, num_workers=3, cpus_per_worker=1)
    assert (p.num_workers, p.cpus_per_worker) == (3, 1.0)
    assert p.reason == "scaling from the spec"


def test_override_workers_only_sizes_cpus():
    p = plan(16, 1, num_workers=3)
    assert (p.num_workers, p.cpus_per_worker) == (3, 5)     # floor(15 / 3)
    assert p.reason == "scaling from the spec"


def test_override_too_many_workers_is_clamped():
    p = plan(4, 1, num_workers=8, cpus_per_worker=1)
    assert (p.num_workers, p.cpus_per_worker) == (3, 1.0)
    assert p.reason == ("spec asks 8 x 1 CPU but the cluster has 4 CPUs and one stays free for "
                        "Ray Data: 3 worker(s)")


def test_override_workers_equal_to_cpus_is_clamped():
    p = plan(4, 1, num_workers=4)
    assert (p.num_workers, p.cpus_per_worker) == (3, 1.0)
    assert "spec asks 4 x 1 CPU" in p.reason and "3 worker(s)" in p.reason


def test_override_too_big_workers_is_clamped():
    p = plan(4, 1, num_workers=2, cpus_per_worker=4)
    assert (p.num_workers, p.cpus_per_worker) == (1, 3.0)
    assert used(p) <= 3
    assert "cpus_per_worker 4 cut to 3" in p.reason
    assert p.reason.endswith("spec asks 2 x 3 CPU but the cluster has 4 CPUs and one stays free "
                             "for Ray Data: 1 worker(s)")


def test_override_on_a_multi_node_cluster_is_clamped():
    p = plan(16, 4, num_workers=4, cpus_per_worker=4)
    assert (p.num_workers, p.cpus_per_worker) == (3, 4.0)
    assert used(p) <= 15
    assert "spec asks 4 x 4 CPU but the cluster has 16 CPUs" in p.reason
    assert p.reason.endswith("3 worker(s)")


def test_one_worker_bigger_than_the_cluster_is_shrunk():
    p = plan(4, 1, num_workers=1, cpus_per_worker=8)
    assert (p.num_workers, p.cpus_per_worker) == (1, 3.0)


def test_one_worker_bigger_than_the_cluster_reason_says_why():
    p = plan(4, 1, num_workers=1, cpus_per_worker=8)
    assert p.reason != "scaling from the spec"
    assert "8" in p.reason and "4 CPUs" in p.reason


def test_auto_workers_with_oversized_cpus_reason_says_why():
    p = plan(2, 1, cpus_per_worker=4)
    assert (p.num_workers, p.cpus_per_worker) == (1, 1.0)
    assert p.reason != SINGLE_NODE
    assert "4" in p.reason and "2 CPUs" in p.reason


@pytest.mark.parametrize("cpus, nodes, scaling", [
    (2, 1, {}), (4, 1, {}), (16, 4, {}), (4, 1, {"num_workers": 8, "cpus_per_worker": 1}),
    (4, 1, {"num_workers": 2, "cpus_per_worker": 4}), (16, 4, {"num_workers": 4, "cpus_per_worker": 4}),
    (16, 4, {"cpus_per_worker": 8}), (3, 1, {"num_workers": 5, "cpus_per_worker": 0.5}),
])
def test_a_cpu_always_stays_free_for_ray_data(cpus, nodes, scaling):
    p = plan(cpus, nodes, **scaling)
    assert p.num_workers >= 1 and p.cpus_per_worker > 0
    assert used(p) <= cpus - 1


# --------------------------------------------------------------------------- GPUs

def test_use_gpu_without_gpu_raises():
    with pytest.raises(RuntimeError, match="scaling.use_gpu is true but the Ray cluster reports no GPU"):
        plan(4, 1, 0, use_gpu=True)
    with pytest.raises(RuntimeError, match="no GPU"):
        plan(16, 4, 0.5, use_gpu=True, num_workers=2)


def test_use_gpu_with_gpus():
    p = plan(4, 1, 2, use_gpu=True)
    assert (p.num_workers, p.cpus_per_worker, p.use_gpu) == (1, 3, True)


def test_use_gpu_caps_workers_at_gpu_count():
    p = plan(16, 1, 2, use_gpu=True, num_workers=4, cpus_per_worker=2)
    assert (p.num_workers, p.use_gpu) == (2, True)


def test_use_gpu_cap_is_explained():
    p = plan(16, 4, 1, use_gpu=True)
    assert p.num_workers == 1
    assert "GPU" in p.reason


def test_gpus_unused_when_not_asked():
    p = plan(4, 1, 8)
    assert (p.num_workers, p.use_gpu) == (1, False)


# --------------------------------------------------------------------------- from a spec

def test_plan_from_a_spec_scaling_section():
    spec = parse_spec("name: x\nsources:\n  - {type: files, path: a.csv}\ntarget: y\n"
                      "problem_type: classification\nscaling:\n  num_workers: 2\n  cpus_per_worker: 1\n",
                      "spec.yaml", env={}, base_dir="/b")
    assert spec.scaling == Scaling(num_workers=2, cpus_per_worker=1, use_gpu=False)
    p = plan_training(spec.scaling, 4.0, 1, 0.0)
    assert (p.num_workers, p.cpus_per_worker, p.reason) == (2, 1.0, "scaling from the spec")
    p = plan_training(spec.scaling, 2.0, 1, 0.0)
    assert (p.num_workers, p.cpus_per_worker) == (1, 1.0)
    assert "spec asks 2 x 1 CPU but the cluster has 2 CPUs" in p.reason


def test_scaling_defaults_and_bad_values():
    assert Scaling() == Scaling(num_workers="auto", cpus_per_worker="auto", use_gpu=False)
    for bad in ({"num_workers": 0}, {"cpus_per_worker": 0}, {"num_workers": "many"}):
        with pytest.raises(ValueError):
            Scaling(**bad)
