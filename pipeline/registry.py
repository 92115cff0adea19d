"""MLflow: tracking setup, the run's records, registration and aliases.

The SQLite database and the experiment are created here, in the driver, before any worker could
log (MLflow's first-time schema migration races when several processes start it at once).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from pipeline.spec import Spec

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"


def configure(spec: Spec) -> str:
    """Point MLflow at the spec's tracking URI and make sure the experiment exists. Returns its id."""
    import mlflow

    uri = spec.tracking.uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(spec.experiment_name)
    experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(
        spec.experiment_name, artifact_location=_artifact_location(spec))
    mlflow.set_experiment(experiment_id=experiment_id)  # nested runs land here too
    return experiment_id


def _artifact_location(spec: Spec) -> Optional[str]:
    if spec.tracking.artifact_location:
        return spec.tracking.artifact_location
    uri = spec.tracking.uri
    if uri.startswith("sqlite:///"):
        # Beside the database, so the whole store is one folder (.rayline/) and `mlflow ui
        # --backend-store-uri <uri>` serves the artifacts from wherever it is started.
        return str(Path(uri[len("sqlite:///"):]).parent / "artifacts" / spec.experiment_name)
    return None


def log_spec(spec: Spec) -> None:
    """The spec as written (secrets stay ${VAR}), plus the parameters that define the run."""
    import mlflow

    mlflow.log_text(yaml.safe_dump(spec.redacted(), sort_keys=False), "spec/spec.yaml")
    params = {
        "seed": spec.seed, "problem_type": spec.problem_type, "target": spec.target,
        "id_column": spec.id_column, "split_ratios": list(spec.split.ratios),
        "stratify": spec.split.stratify, "models": ",".join(spec.model_families),
        "primary_metric": spec.primary_metric[0], "sources": len(spec.sources),
        "transformations": ",".join(t.name for t in spec.transformations),
    }
    mlflow.log_params({k: v for k, v in params.items() if v is not None})
    mlflow.set_tags({"rayline.spec_name": spec.name, "rayline.spec_file": os.path.basename(spec.filename)})


def log_dict(data: Any, artifact: str) -> None:
    import mlflow

    mlflow.log_text(json.dumps(data, indent=2, default=str), artifact)


def log_predictor(predictor_dir: Path, input_example, model_name: str):
    """Log the predictor as the run's MLflow model ("model") and register a new version."""
    import mlflow

    from pipeline._internal import mlflow_model
    from pipeline.predictor import ARTIFACT_NAME

    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=mlflow_model.__file__,
        artifacts={ARTIFACT_NAME: str(predictor_dir)},
        input_example=input_example,
        pip_requirements=_requirements(),
        registered_model_name=model_name,
    )
    return info


def _requirements() -> list[str]:
    from importlib.metadata import version

    packages = ["mlflow", "pandas", "numpy", "scikit-learn", "xgboost", "skops"]
    return [f"{p}=={version(p)}" for p in packages]


def promote(model_name: str, version: str) -> Optional[str]:
    """Make `version` the champion; the champion it replaces becomes `previous` (for rollback).
    Returns the previous champion's version, if any."""
    import mlflow

    client = mlflow.MlflowClient()
    old = champion_version(model_name)
    if old is not None and old != str(version):
        client.set_registered_model_alias(model_name, PREVIOUS, old)
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    return old


def champion_version(model_name: str, alias: str = CHAMPION) -> Optional[str]:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def resolve_version(model_name: str, ref: str) -> tuple[str, Any]:
    """(version, ModelVersion) for an alias ('champion') or a version number ('3')."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        mv = (client.get_model_version(model_name, ref) if ref.isdigit()
              else client.get_model_version_by_alias(model_name, ref))
    except MlflowException as exc:
        raise LookupError(f"model {model_name!r} has no version {ref!r} in the registry "
                          f"({mlflow.get_tracking_uri()}): run `rayline run` first") from exc
    return str(mv.version), mv


def download_model(model_name: str, ref: str, dest: str | Path | None = None) -> tuple[str, Path, Any]:
    """(version, local model folder, ModelVersion) for `models:/name@alias` or `models:/name/N`."""
    import mlflow

    version, mv = resolve_version(model_name, ref)
    path = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}",
                                               dst_path=str(dest) if dest else None)
    return version, Path(path), mv


def registered_features(spec: Spec, ref: str = CHAMPION):
    """(version, fitted FeaturePipeline) of a registered model, read from its artifact."""
    import tempfile

    from pipeline.features import FeaturePipeline
    from pipeline.predictor import find_predictor_dir

    configure(spec)
    with tempfile.TemporaryDirectory() as tmp:
        version, path, _ = download_model(spec.name, ref, tmp)
        return version, FeaturePipeline.load(find_predictor_dir(path) / "features.json")


def latest_leaderboard(spec: Spec, run_id: Optional[str] = None) -> tuple[str, list[dict]]:
    """(run id, leaderboard rows) of `run_id` or of the experiment's latest run that has one."""
    import mlflow

    configure(spec)
    client = mlflow.MlflowClient()
    if run_id is None:
        experiment = client.get_experiment_by_name(spec.experiment_name)
        runs = client.search_runs([experiment.experiment_id], "tags.`rayline.champion_family` != ''",
                                  order_by=["attributes.start_time DESC"], max_results=1) if experiment else []
        if not runs:
            raise LookupError(f"no training run in experiment {spec.experiment_name!r} at "
                              f"{mlflow.get_tracking_uri()}: run `rayline run` first")
        run_id = runs[0].info.run_id
    try:
        path = client.download_artifacts(run_id, "leaderboard.json")
    except Exception as exc:  # MLflow raises several kinds for a missing artifact or run
        raise LookupError(f"run {run_id} has no leaderboard.json ({exc})") from None
    return run_id, json.loads(Path(path).read_text())
