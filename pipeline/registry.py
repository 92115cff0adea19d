"""MLflow: tracking setup, the run's records, registration, and loading a registered version.

The SQLite database and the experiment are created here, in the driver, before any worker could
log (MLflow's first-time schema migration races when several processes start it at once).
Reading aliases is here; changing them is `pipeline.lifecycle`'s, which records every change.

`load_predictor` is the one way a registered version becomes a Predictor: serving replicas,
batch scoring actors and the Kafka consumer all call it.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import yaml

from pipeline.errors import NotFound

if TYPE_CHECKING:
    from pipeline.predictor import InputSchema, Predictor
    from pipeline.spec import Spec, Tracking

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"


class NotRegistered(NotFound):
    """No such registered model, version or alias."""

    title = "no registered model"


def configure(tracking: "Tracking", experiment: str) -> str:
    """Point MLflow at the tracking URI and make sure the experiment exists. Returns its id."""
    import mlflow

    set_uri(tracking.uri)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(
        experiment, artifact_location=_artifact_location(tracking, experiment))
    mlflow.set_experiment(experiment_id=experiment_id)  # nested runs land here too
    return experiment_id


def configure_for(spec: "Spec") -> str:
    """`configure` with the spec's tracking section and experiment name."""
    return configure(spec.tracking, spec.experiment_name)


def set_uri(uri: str) -> None:
    """Tracking and registry at `uri` (in a Ray actor or replica, before it reads the registry)."""
    import mlflow

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def _artifact_location(tracking: "Tracking", experiment: str) -> Optional[str]:
    if tracking.artifact_location:
        return tracking.artifact_location
    uri = tracking.uri
    if uri.startswith("sqlite:///"):
        # Beside the database, so the whole store is one folder (.rayline/) and `mlflow ui
        # --backend-store-uri <uri>` serves the artifacts from wherever it is started.
        return str(Path(uri[len("sqlite:///"):]).parent / "artifacts" / experiment)
    return None


# --------------------------------------------------------------------------- the run's records

def log_spec(spec: "Spec") -> None:
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


def log_predictor(predictor_dir: Path, input_example, model_name: Optional[str]):
    """Log the predictor as the run's MLflow model ("model"); with `model_name`, register it as
    a new version of that model."""
    import mlflow

    from pipeline._internal import mlflow_model
    from pipeline.predictor import ARTIFACT_NAME

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=mlflow_model.__file__,
        artifacts={ARTIFACT_NAME: str(predictor_dir)},
        input_example=input_example,
        pip_requirements=_requirements(),
        registered_model_name=model_name,
    )


def _requirements() -> list[str]:
    from importlib.metadata import version

    packages = ["mlflow", "pandas", "numpy", "scikit-learn", "xgboost", "skops"]
    return [f"{p}=={version(p)}" for p in packages]


# --------------------------------------------------------------------------- reading the registry

def alias_version(model_name: str, alias: str = CHAMPION) -> Optional[str]:
    """The version an alias points at, or None."""
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
    ref = str(ref)
    try:
        mv = (client.get_model_version(model_name, ref) if ref.isdigit()
              else client.get_model_version_by_alias(model_name, ref))
    except MlflowException as exc:
        raise NotRegistered(f"model {model_name!r} has no version {ref!r} in the registry "
                            f"({mlflow.get_tracking_uri()}): run `rayline run` first") from exc
    return str(mv.version), mv


@contextmanager
def predictor_files(model_name: str, ref: str) -> Iterator[tuple[str, Any, Path]]:
    """(version, ModelVersion, the predictor folder) of a registered version, downloaded into a
    temporary folder that is removed when the block ends."""
    import mlflow

    from pipeline.predictor import find_predictor_dir

    version, mv = resolve_version(model_name, ref)
    with tempfile.TemporaryDirectory(prefix="rayline-model-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}",
                                                   dst_path=tmp)
        yield version, mv, find_predictor_dir(path)


@dataclass
class LoadedVersion:
    """A registered version loaded for scoring: its Predictor and what a response names."""
    name: str
    version: str
    run_id: str
    predictor: "Predictor"

    @property
    def info(self) -> dict[str, Any]:
        meta = self.predictor.meta
        return {"name": self.name, "version": self.version, "family": meta.get("family", "?"),
                "run_id": self.run_id or meta.get("run_id", ""),
                "data_versions": meta.get("data_versions", {}),
                "test_metrics": meta.get("test_metrics", {}),
                "id_column": meta.get("id_column")}


def load_predictor(model_name: str, ref: str, tracking_uri: Optional[str] = None) -> LoadedVersion:
    """The registered version `ref` (alias or number) of `model_name`, downloaded and loaded
    (the files are not kept: a Predictor holds everything in memory). `tracking_uri` points
    MLflow there first: a Ray actor or Serve replica starts with no tracking set."""
    from pipeline.predictor import Predictor

    if tracking_uri is not None:
        set_uri(tracking_uri)
    with predictor_files(model_name, ref) as (version, mv, directory):
        predictor = Predictor.load(directory)
    return LoadedVersion(model_name, version, mv.run_id or "", predictor)


def load_input_schema(model_name: str, ref: str) -> tuple[str, "InputSchema"]:
    """(version, input schema) of a registered version, without loading its model."""
    from pipeline.predictor import InputSchema

    with predictor_files(model_name, ref) as (version, _, directory):
        return version, InputSchema.from_dict(json.loads((directory / "schema.json").read_text()))


def registered_features(model_name: str, ref: str = CHAMPION):
    """(version, fitted FeaturePipeline) of a registered version, read from its artifact."""
    from pipeline.features import FeaturePipeline

    with predictor_files(model_name, ref) as (version, _, directory):
        return version, FeaturePipeline.load(directory / "features.json")


def latest_leaderboard(experiment: str, run_id: Optional[str] = None) -> tuple[str, list[dict]]:
    """(run id, leaderboard rows) of `run_id` or of the experiment's latest run that has one."""
    import mlflow

    client = mlflow.MlflowClient()
    if run_id is None:
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id], "tags.`rayline.champion_family` != ''",
                                  order_by=["attributes.start_time DESC"], max_results=1) if found else []
        if not runs:
            raise NotFound(f"no training run in experiment {experiment!r} at "
                           f"{mlflow.get_tracking_uri()}: run `rayline run` first")
        run_id = runs[0].info.run_id
    try:
        path = client.download_artifacts(run_id, "leaderboard.json")
    except Exception as exc:  # MLflow raises several kinds for a missing artifact or run
        raise NotFound(f"run {run_id} has no leaderboard.json ({exc})") from None
    return run_id, json.loads(Path(path).read_text())
