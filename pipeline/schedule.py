"""The batch option's `frequency` as Kubernetes manifests: a KubeRay RayJob that runs
`python -m jobs.batch_score --spec ...` on a cluster it creates and deletes
(`shutdownAfterJobFinishes: true`), and a CronJob whose pod creates that RayJob on the schedule
and waits for it, so the CronJob's own history shows each run's outcome and
`concurrencyPolicy: Forbid` keeps two runs from overlapping.

`rayline score SPEC --emit-schedule DIR` writes them; cluster/README.md says how to apply them.
The hand-written examples in cluster/ have the same shape.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Optional

import yaml

from pipeline.errors import RaylineError
from pipeline.spec import Spec

RAY_IMAGE = "rayproject/ray:2.60.0-py311"
RAY_VERSION = "2.60.0"
KUBECTL_IMAGE = "alpine/k8s:1.34.1"   # any image with kubectl and sh will do
JOBS = ("batch_score", "train")

# What a job needs on top of the Ray image when the project comes as a runtime-env working_dir:
# pyproject's dependencies less ray (in the image) and torch (use an image with torch for the
# torch families). tests/unit/test_cluster_manifests.py keeps this list in step with pyproject.
RUNTIME_PIP = [
    "pandas>=2.2,<3", "numpy>=2.0,<2.5", "pyarrow>=15", "xgboost>=3.0,<4", "scikit-learn>=1.5,<2",
    "mlflow>=3.17,<3.18", "skops>=0.10", "great-expectations>=1.3,<2", "evidently>=0.7,<0.8",
    "pydantic>=2.7,<3", "ruamel.yaml>=0.18", "pyyaml>=6", "typer>=0.12", "rich>=13",
    "fastapi>=0.110", "httpx>=0.27", "sqlalchemy>=2", "psycopg[binary]>=3.1", "deltalake>=1.1,<2",
    "optuna>=3", "hyperopt>=0.2.7", "confluent-kafka>=2.3",
]

_NAMED = {"hourly": "0 * * * *", "daily": "0 0 * * *", "weekly": "0 0 * * 0",
          "monthly": "0 0 1 * *", "yearly": "0 0 1 1 *", "annually": "0 0 1 1 *",
          "midnight": "0 0 * * *"}
_CRON_FIELD = re.compile(r"^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?"
                         r"(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$")
_EVERY = re.compile(r"^(\d+)\s*[_ ]?\s*(m|min|minutes?|h|hours?)$")


class ScheduleError(RaylineError, ValueError):
    """A frequency, image or working directory a schedule cannot be made from."""

    title = "cannot emit a schedule"


def cron_schedule(frequency: str) -> str:
    """A five-field cron expression (UTC) for `hourly`, `daily`, `weekly`, `monthly`, `@daily`,
    `15m` / `6h` (a divisor of the hour / day), or a cron expression itself."""
    text = frequency.strip()
    key = text.lower().lstrip("@")
    if key in _NAMED:
        return _NAMED[key]
    every = _EVERY.match(text.lower())
    if every:
        n, unit = int(every.group(1)), every.group(2)
        if unit.startswith("m") and n > 0 and 60 % n == 0:
            return f"*/{n} * * * *"
        if unit.startswith("h") and n > 0 and 24 % n == 0:
            return "0 * * * *" if n == 1 else f"0 */{n} * * *"
    fields = text.split()
    if len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields):
        return " ".join(fields)
    raise ScheduleError(f"frequency {frequency!r} is not a schedule: use hourly, daily, weekly, "
                        "monthly, 15m or 6h (dividing the hour or day evenly), or a five-field "
                        "cron expression such as '30 2 * * *'")


def resource_name(spec: Spec, suffix: str = "batch-score") -> str:
    """A DNS-1123 name from the spec's name (lower case, '-' for anything else)."""
    base = re.sub(r"[^a-z0-9-]+", "-", spec.name.lower()).strip("-") or "rayline"
    return f"{base}-{suffix}"[:52].rstrip("-")


def runtime_env(working_dir: Optional[str], image: str, env_vars: Optional[dict[str, str]] = None) -> str:
    """runtimeEnvYAML: the project as a working_dir archive (a URL Ray can fetch: https://, s3://,
    gs://) and, on the stock Ray image, the pip packages it needs."""
    env: dict[str, Any] = {}
    if working_dir:
        env["working_dir"] = working_dir
    if image.startswith("rayproject/ray"):
        env["pip"] = list(RUNTIME_PIP)
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return dump_yaml(env) if env else ""


def ray_cluster_spec(image: str, workers: int = 2, worker_cpus: int = 4,
                     worker_memory: str = "8Gi") -> dict:
    """Head (no work scheduled on it) + one CPU worker group."""
    def container(name: str, cpu: str, memory: str, ports: list[dict] | None = None) -> dict:
        c: dict[str, Any] = {
            "name": name, "image": image,
            "resources": {"requests": {"cpu": cpu, "memory": memory},
                          "limits": {"cpu": cpu, "memory": memory}},
            # ${VAR} values of the spec and storage/MLflow credentials; optional
            "envFrom": [{"secretRef": {"name": "rayline-env", "optional": True}}],
        }
        if ports:
            c["ports"] = ports
        return c

    return {
        "rayVersion": RAY_VERSION,
        "headGroupSpec": {
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": {"spec": {"containers": [container(
                "ray-head", "2", "8Gi",
                [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
                 {"name": "client", "containerPort": 10001}])]}},
        },
        "workerGroupSpecs": [{
            "groupName": "cpu", "replicas": workers, "minReplicas": 1,
            "maxReplicas": max(workers, 4), "rayStartParams": {},
            "template": {"spec": {"containers": [container("ray-worker", str(worker_cpus),
                                                           worker_memory)]}},
        }],
    }


def rayjob_manifest(spec: Spec, spec_path: str, *, job: str = "batch_score",
                    image: str = RAY_IMAGE, working_dir: Optional[str] = None,
                    model: Optional[str] = None, namespace: Optional[str] = None,
                    generate_name: bool = False) -> dict:
    """A RayJob running `python -m jobs.<job> --spec spec_path` (batch_score or train) on its
    own cluster, deleted when the job finishes."""
    if job not in JOBS:
        raise ScheduleError(f"unknown job {job!r}; known: {', '.join(JOBS)}")
    name = resource_name(spec, job.replace("_", "-"))
    entrypoint = ["python", "-m", f"jobs.{job}", "--spec", spec_path]
    if job == "batch_score":
        batch = spec.serving_or_defaults("batch")
        entrypoint += ["--model", str(model or batch.model)]
    metadata: dict[str, Any] = {"generateName": f"{name}-"} if generate_name else {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = _labels(spec, job)
    job_spec: dict[str, Any] = {
        "entrypoint": shlex.join(entrypoint),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": 3600,
        "activeDeadlineSeconds": 4 * 3600,
        "backoffLimit": 0,
        "submissionMode": "K8sJobMode",
        "rayClusterSpec": ray_cluster_spec(image),
    }
    env = runtime_env(working_dir, image)
    if env:
        job_spec["runtimeEnvYAML"] = env
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": metadata, "spec": job_spec}


# Creates the RayJob and waits for KubeRay to finish it: the pod's exit status is the run's.
_CREATE_AND_WAIT = """\
set -eu
job=$(kubectl create -f /etc/rayline/rayjob.yaml -o name)
echo "created $job"
while :; do
  state=$(kubectl get "$job" -o jsonpath='{.status.jobDeploymentStatus}' || true)
  case "$state" in Complete|Failed) break ;; esac
  sleep 30
done
status=$(kubectl get "$job" -o jsonpath='{.status.jobStatus}')
echo "$job: $state, Ray job $status"
test "$status" = SUCCEEDED
"""


def cronjob_manifests(spec: Spec, spec_path: str, *, image: str = RAY_IMAGE,
                      working_dir: Optional[str] = None, model: Optional[str] = None,
                      namespace: Optional[str] = None, kubectl_image: str = KUBECTL_IMAGE,
                      frequency: Optional[str] = None) -> list[dict]:
    """ConfigMap (the RayJob), ServiceAccount + Role + RoleBinding (create and watch RayJobs),
    and the CronJob."""
    batch = spec.serving("batch")
    frequency = frequency or (batch.frequency if batch else None)
    if not frequency:
        raise ScheduleError("the spec has no serving_options batch entry with a frequency "
                            "(e.g. `frequency: daily`)")
    schedule = cron_schedule(frequency)
    name = resource_name(spec)
    rayjob = rayjob_manifest(spec, spec_path, image=image, working_dir=working_dir, model=model,
                             namespace=namespace, generate_name=True)

    def meta(kind_name: str) -> dict:
        m: dict[str, Any] = {"name": kind_name, "labels": _labels(spec)}
        if namespace:
            m["namespace"] = namespace
        return m

    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{name}-rayjob"),
                  "data": {"rayjob.yaml": dump_yaml(rayjob)}}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name)}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(name),
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                       "verbs": ["create", "get", "list", "watch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": meta(name),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name,
                             **({"namespace": namespace} if namespace else {})}]}
    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta(name),
        "spec": {
            "schedule": schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": 5 * 3600,
                "template": {"metadata": {"labels": _labels(spec)}, "spec": {
                    "serviceAccountName": name,
                    "restartPolicy": "Never",
                    "containers": [{"name": "create-rayjob", "image": kubectl_image,
                                    "command": ["/bin/sh", "-c", _CREATE_AND_WAIT],
                                    "volumeMounts": [{"name": "rayjob", "mountPath": "/etc/rayline",
                                                      "readOnly": True}]}],
                    "volumes": [{"name": "rayjob", "configMap": {"name": f"{name}-rayjob"}}],
                }},
            }},
        },
    }
    return [config_map, account, role, binding, cronjob]


def emit_schedule(spec: Spec, spec_path: str, directory: str | Path, **options: Any) -> list[Path]:
    """Write `<name>-batch-score-rayjob.yaml` (one run, `kubectl create -f`) and
    `<name>-batch-score-cronjob.yaml` (the schedule, `kubectl apply -f`). Returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = resource_name(spec)
    documents = cronjob_manifests(spec, spec_path, **options)
    once = rayjob_manifest(spec, spec_path, **{k: v for k, v in options.items()
                                               if k in ("image", "working_dir", "model", "namespace")})
    header = (f"# Generated by `rayline score {spec_path} --emit-schedule`; see cluster/README.md.\n")
    paths = [directory / f"{name}-rayjob.yaml", directory / f"{name}-cronjob.yaml"]
    paths[0].write_text(header + dump_yaml(once))
    paths[1].write_text(header + dump_yaml(*documents))
    return paths


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the runtime env, the embedded RayJob, the script) as `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(*documents: Any) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100)


def _labels(spec: Spec, job: str = "batch_score") -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "rayline", "app.kubernetes.io/component": job.replace("_", "-"),
            "rayline.io/spec": spec.name[:63].rstrip("-_.")}
