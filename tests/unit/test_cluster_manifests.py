"""The Kubernetes manifests in cluster/ and those `rayline score --emit-schedule` writes.

KubeRay resources are validated with jsonschema against the CRDs' openAPIV3Schema: the pruned
copy committed in cluster/schemas/ always (a clean clone has nothing else), and the full CRDs
too where they are at hand. Unknown fields are errors, as with `kubectl apply --validate=strict`.
CronJobs and their companions are checked structurally; no cluster is needed.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline import schedule
from pipeline.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
FULL_CRDS = Path(os.environ.get("RAYLINE_KUBERAY_CRDS", "/work/shared/kuberay-crds"))
HAVE_CRDS = (FULL_CRDS / "ray.io_rayjobs.yaml").is_file()


def _load_generate():
    spec = importlib.util.spec_from_file_location("cluster_generate", CLUSTER / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generate()


def _cluster_spec():
    return generate.load_spec()


def _example_spec_with_batch(frequency: str = "hourly"):
    text = (ROOT / "examples" / "churn" / "spec.yaml").read_text()
    marker = "serving_options:\n"
    assert marker in text
    text = text.replace(marker, marker + f"  - name: batch\n    frequency: \"{frequency}\"\n"
                                         "    output: ./.rayline/scores\n")
    return parse_spec(text, "spec.yaml", base_dir=ROOT)


def _yaml_files() -> list[Path]:
    return sorted(p for p in CLUSTER.glob("*.yaml") if p.name != "churn-spec.yaml")


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.fixture(scope="module")
def emitted(tmp_path_factory) -> dict[str, list[dict]]:
    """What --emit-schedule writes for both specs, in several variants."""
    out = tmp_path_factory.mktemp("emitted")
    found: dict[str, list[dict]] = {}
    variants = [(_cluster_spec(), generate.SPEC_IN_JOB, {"working_dir": generate.WORKING_DIR}),
                (_cluster_spec(), generate.SPEC_IN_JOB, {"image": "example.com/rayline:1",
                                                         "namespace": "ml"}),
                (_example_spec_with_batch(), "examples/churn/spec.yaml", {"model": "3"})]
    for i, (spec, spec_path, options) in enumerate(variants):
        for path in schedule.emit_schedule(spec, spec_path, out / str(i), **options):
            found[f"{i}/{path.name}"] = _documents(path)
    return found


def _all_documents(emitted) -> list[tuple[str, dict]]:
    docs = [(p.name, d) for p in _yaml_files() for d in _documents(p)]
    docs += [(name, d) for name, ds in emitted.items() for d in ds]
    return docs


def _kuberay(emitted) -> list[tuple[str, dict]]:
    return [(name, k) for name, d in _all_documents(emitted) for k in generate._kuberay(d)]


# --------------------------------------------------------------------------- schemas

def strict(schema):
    """Reject unknown fields wherever KubeRay's schema lists the known ones and does not ask to
    preserve unknown fields (kubectl's strict field validation)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    node = {k: (strict(v) if k != "properties" else {p: strict(s) for p, s in v.items()})
            for k, v in schema.items()}
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    return node


def _committed_schema(kind: str) -> dict:
    path = generate.schema_path(kind)
    assert path.is_file(), f"no pruned schema for {kind}: run python cluster/generate.py --crds DIR"
    return json.loads(path.read_text())


SCHEMA_SOURCES = ["committed"] + (["full-crd"] if HAVE_CRDS else [])


@pytest.fixture(scope="module", params=SCHEMA_SOURCES)
def validators(request) -> dict[str, jsonschema.Draft7Validator]:
    def schema(kind: str) -> dict:
        if request.param == "full-crd":
            return generate.crd_schema(FULL_CRDS, kind)
        return _committed_schema(kind)

    kinds = {"RayCluster", "RayJob"} | ({"RayService"} if request.param == "full-crd" else set())
    return {kind: jsonschema.Draft7Validator(strict(schema(kind))) for kind in kinds}


def _errors(validators, document: dict) -> list[str]:
    validator = validators.get(document["kind"])
    assert validator is not None, f"no schema for {document['kind']}: regenerate cluster/schemas"
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(document)]


def test_cluster_folder_has_the_documented_manifests():
    names = {p.name for p in _yaml_files()}
    assert {"raycluster.yaml", "rayjob-train.yaml", "rayjob-batch-score.yaml",
            "cronjob-batch-score.yaml"} <= names
    assert (CLUSTER / "README.md").is_file() and (CLUSTER / "schemas" / "SOURCE.md").is_file()


def test_every_kuberay_manifest_validates_against_the_crd(validators, emitted):
    documents = _kuberay(emitted)
    kinds = {d["kind"] for _, d in documents}
    assert {"RayCluster", "RayJob"} <= kinds
    assert sum(1 for name, _ in documents if "/" in name) >= 6  # the generated ones are in
    problems = []
    for name, document in documents:
        assert document["apiVersion"] == "ray.io/v1", name
        meta = document["metadata"]
        label = meta.get("name") or meta.get("generateName")
        assert label and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?-?", label) and len(label) <= 63, name
        problems += [f"{name} ({document['kind']} {label}): {e}" for e in _errors(validators, document)]
    assert not problems, "\n".join(problems)


def test_validation_still_catches_mistakes_in_the_fields_we_use(validators):
    job = _documents(CLUSTER / "rayjob-batch-score.yaml")[0]
    cases = {
        "typo": ("spec", "shutdownAfterJobsFinish", True),
        "wrong type": ("spec", "shutdownAfterJobFinishes", "yes"),
        "bad int": ("spec", "ttlSecondsAfterFinished", "an hour"),
    }
    for label, (section, key, value) in cases.items():
        broken = copy.deepcopy(job)
        broken[section][key] = value
        assert _errors(validators, broken), label
    broken = copy.deepcopy(job)
    workers = broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    workers["replicas"] = "two"
    assert any("replicas" in e for e in _errors(validators, broken))
    broken = copy.deepcopy(job)
    del broken["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"]
    assert any("'name' is a required property" in e for e in _errors(validators, broken))
    broken = copy.deepcopy(job)
    broken["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "resources"]["limits"]["cpu"] = "two cores"
    assert _errors(validators, broken)
    broken = copy.deepcopy(job)
    broken["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert _errors(validators, broken)  # rayStartParams values are strings


@pytest.mark.skipif(not HAVE_CRDS, reason=f"full KubeRay CRDs not at {FULL_CRDS}")
def test_committed_schemas_are_the_crds_pruned_to_our_manifests():
    expected = generate.pruned_schemas(FULL_CRDS, generate.schema_documents())
    for kind, schema in expected.items():
        assert _committed_schema(kind) == json.loads(json.dumps(schema)), (
            f"cluster/schemas/{kind.lower()}.v1.json is stale: run "
            f"python cluster/generate.py --crds {FULL_CRDS}")
    size = sum(generate.schema_path(k).stat().st_size for k in expected)
    assert size < 200_000, f"pruned schemas are {size:,} bytes"


def test_committed_examples_are_what_the_generator_writes():
    for name, documents in generate.examples().items():
        committed = _documents(CLUSTER / name)
        assert committed == json.loads(json.dumps(documents)), (
            f"cluster/{name} differs from cluster/generate.py: run python cluster/generate.py")
        assert (CLUSTER / name).read_text().startswith(generate.HEADERS[name])


def test_the_cluster_spec_is_a_valid_spec():
    spec = _cluster_spec()
    batch = spec.serving("batch")
    assert batch.frequency == "daily" and batch.output.startswith("s3://")
    assert spec.tracking.uri.startswith("http")


# --------------------------------------------------------------------------- CronJob and friends

CRONJOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "batch/v1"},
        "kind": {"const": "CronJob"},
        "metadata": {"type": "object", "required": ["name"],
                     "properties": {"name": {"type": "string", "maxLength": 52,
                                             "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}}},
        "spec": {
            "type": "object", "required": ["schedule", "jobTemplate"],
            "properties": {
                "schedule": {"type": "string"},
                "timeZone": {"type": "string"},
                "concurrencyPolicy": {"enum": ["Allow", "Forbid", "Replace"]},
                "startingDeadlineSeconds": {"type": "integer", "minimum": 0},
                "successfulJobsHistoryLimit": {"type": "integer", "minimum": 0},
                "failedJobsHistoryLimit": {"type": "integer", "minimum": 0},
                "suspend": {"type": "boolean"},
                "jobTemplate": {
                    "type": "object", "required": ["spec"],
                    "properties": {"spec": {
                        "type": "object", "required": ["template"],
                        "properties": {
                            "backoffLimit": {"type": "integer", "minimum": 0},
                            "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                            "template": {
                                "type": "object", "required": ["spec"],
                                "properties": {"spec": {
                                    "type": "object", "required": ["containers", "restartPolicy"],
                                    "properties": {
                                        "restartPolicy": {"enum": ["Never", "OnFailure"]},
                                        "serviceAccountName": {"type": "string"},
                                        "containers": {"type": "array", "minItems": 1, "items": {
                                            "type": "object", "required": ["name", "image"],
                                            "properties": {
                                                "name": {"type": "string"}, "image": {"type": "string"},
                                                "command": {"type": "array", "items": {"type": "string"}},
                                                "volumeMounts": {"type": "array", "items": {
                                                    "type": "object",
                                                    "required": ["name", "mountPath"]}}}}},
                                        "volumes": {"type": "array", "items": {
                                            "type": "object", "required": ["name"]}}}}}},
                        }},
                    }},
            }},
    },
}


def _cron_files(emitted) -> dict[str, list[dict]]:
    files = {p.name: _documents(p) for p in _yaml_files()
             if any(d.get("kind") == "CronJob" for d in _documents(p))}
    files.update({n: ds for n, ds in emitted.items() if any(d.get("kind") == "CronJob" for d in ds)})
    assert len(files) >= 4
    return files


def test_cronjobs_are_well_formed_and_complete(emitted):
    validator = jsonschema.Draft7Validator(CRONJOB_SCHEMA)
    for name, documents in _cron_files(emitted).items():
        by_kind = {}
        for d in documents:
            assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), name
            by_kind.setdefault(d["kind"], []).append(d)
        (cron,) = by_kind["CronJob"]
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(cron)]
        assert not errors, f"{name}: {errors}"
        schedule.cron_schedule(cron["spec"]["schedule"])  # five valid fields
        assert len(cron["spec"]["schedule"].split()) == 5
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        # every mount has its volume, the volume its ConfigMap, and the ConfigMap a RayJob
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in pod["containers"][0]["volumeMounts"]:
            config = volumes[mount["name"]]["configMap"]["name"]
            (config_map,) = [c for c in by_kind["ConfigMap"] if c["metadata"]["name"] == config]
            (rayjob,) = generate._kuberay(config_map)
            assert rayjob["kind"] == "RayJob" and rayjob["spec"]["shutdownAfterJobFinishes"] is True
            assert rayjob["spec"]["entrypoint"].startswith("python -m jobs.batch_score --spec ")
            assert rayjob["metadata"]["generateName"]  # a new name per run
            script = pod["containers"][0]["command"][-1]
            assert f"{mount['mountPath']}/rayjob.yaml" in script and "kubectl create" in script
        # the pod's service account may create RayJobs, and only in its own namespace
        account = pod["serviceAccountName"]
        assert account in {a["metadata"]["name"] for a in by_kind["ServiceAccount"]}
        (binding,) = by_kind["RoleBinding"]
        assert {"kind": "ServiceAccount", "name": account} == {k: binding["subjects"][0][k]
                                                               for k in ("kind", "name")}
        (role,) = [r for r in by_kind["Role"] if r["metadata"]["name"] == binding["roleRef"]["name"]]
        rules = role["rules"]
        assert any("ray.io" in r["apiGroups"] and "rayjobs" in r["resources"]
                   and {"create", "get"} <= set(r["verbs"]) for r in rules)
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        namespaces = {d["metadata"].get("namespace") for d in documents}
        assert len(namespaces) == 1, f"{name}: mixed namespaces {namespaces}"


def test_emitted_schedule_follows_the_spec(emitted):
    (cron,) = [d for d in emitted["2/churn-batch-score-cronjob.yaml"] if d["kind"] == "CronJob"]
    assert cron["spec"]["schedule"] == "0 * * * *"  # hourly
    (rayjob,) = emitted["2/churn-batch-score-rayjob.yaml"]
    assert rayjob["metadata"]["name"] == "churn-batch-score"
    assert rayjob["spec"]["entrypoint"] == ("python -m jobs.batch_score --spec examples/churn/spec.yaml "
                                            "--model 3")
    assert "working_dir" not in rayjob["spec"].get("runtimeEnvYAML", "")
    custom = emitted["1/churn-batch-score-rayjob.yaml"][0]
    assert custom["metadata"]["namespace"] == "ml"
    assert "runtimeEnvYAML" not in custom["spec"]  # a custom image brings rayline itself
    env = yaml.safe_load(emitted["0/churn-batch-score-rayjob.yaml"][0]["spec"]["runtimeEnvYAML"])
    assert env["working_dir"] == generate.WORKING_DIR and "mlflow>=3.17,<3.18" in env["pip"]


@pytest.mark.parametrize("frequency, cron", [
    ("hourly", "0 * * * *"), ("daily", "0 0 * * *"), ("weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"), ("Monthly", "0 0 1 * *"), ("15m", "*/15 * * * *"), ("6h", "0 */6 * * *"),
    ("30 2 * * 1-5", "30 2 * * 1-5"), ("0 0 * * MON", "0 0 * * MON"), ("*/5  * * * *", "*/5 * * * *")])
def test_frequency_becomes_a_cron_schedule(frequency, cron):
    assert schedule.cron_schedule(frequency) == cron


@pytest.mark.parametrize("frequency", ["7h", "every day", "0 0 * *", "0 0 * * * *", "5s", "0 0 * * $"])
def test_a_frequency_that_is_no_schedule_is_refused(frequency):
    with pytest.raises(schedule.ScheduleError, match="not a schedule"):
        schedule.cron_schedule(frequency)


def test_no_frequency_no_schedule():
    spec = parse_spec((ROOT / "examples" / "churn" / "spec.yaml").read_text(), "spec.yaml", base_dir=ROOT)
    with pytest.raises(schedule.ScheduleError, match="frequency"):
        schedule.cronjob_manifests(spec, "spec.yaml")


def test_runtime_pip_is_pyprojects_dependencies_less_ray_and_torch():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = [d.replace(" ", "") for d in deps if not re.match(r"^(ray|torch)\b", d)]
    assert schedule.RUNTIME_PIP == expected, (
        "pyproject's dependencies changed: update RUNTIME_PIP in pipeline/schedule.py, then run "
        "python cluster/generate.py")


def test_rayline_score_emit_schedule_cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rayline.cli import app

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    result = CliRunner().invoke(app, ["score", "cluster/churn-spec.yaml", "--emit-schedule",
                                      str(tmp_path), "--working-dir", generate.WORKING_DIR])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["churn-batch-score-cronjob.yaml", "churn-batch-score-rayjob.yaml"]
    emitted = {d["kind"]: d for d in _documents(tmp_path / "churn-batch-score-cronjob.yaml")}
    committed = {d["kind"]: d for d in _documents(CLUSTER / "cronjob-batch-score.yaml")}
    assert emitted == committed

    bad = CliRunner().invoke(app, ["score", "cluster/churn-spec.yaml", "--emit-schedule",
                                   str(tmp_path), "--frequency", "every day"])
    assert bad.exit_code == 1 and "not a schedule" in bad.output
