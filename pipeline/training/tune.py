"""`rayline tune`: the data stage, the split and the features as `rayline run` makes them (the same
stage functions), then the spec's search alone, in an MLflow run of its own (kind "tune") with a
child run per trial."""

from __future__ import annotations

from typing import Optional

from pipeline.progress import Stages
from pipeline.spec import Spec, SpecError
from pipeline.training import stages as st
from pipeline.training.run import features_stage, ray_stage, split_stage


def tune_only(spec: Spec, stages: Stages, resume: bool = False, verbose: bool = False,
              data_version: Optional[int] = None):
    """(TuningResult, run id)."""
    import mlflow

    from pipeline import registry
    from pipeline.data import prepare
    from pipeline.tuning import run_tuning, search_plan
    from pipeline.tuning.records import log_tuning

    if spec.tuning is None:
        raise SpecError([f"{spec.filename}: the spec has no tuning section"])
    search_plan(spec)  # spec problems before any work
    plan = ray_stage(spec, stages, verbose)
    experiment_id = registry.configure_for(spec)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.name}-tune") as run:
        run_id = run.info.run_id
        mlflow.set_tag("rayline.kind", "tune")
        registry.log_spec(spec)
        prepared = prepare(spec, stages, run_id=run_id, data_version=data_version)
        split = split_stage(spec, prepared.frame, stages)
        features = features_stage(spec, split, stages, run_id)
        data = st.train_data(features, spec.problem_type, spec.seed, plan, f"{spec.name}-{run_id[:8]}")
        result = run_tuning(spec, data, stages, resume=resume)
        log_tuning(result, run_id)
    return result, run_id
