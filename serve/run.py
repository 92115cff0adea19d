"""Deploying the Serve app: `rayline serve`, `rayline serve build`, and the A/B commands.

Everything goes through a Serve config (the same document `serve deploy` and a KubeRay
RayService take): the app is `serve.app:app_builder` with the spec's text and the variants'
versions as args, and the traffic split as the ingress' user_config.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from rich.console import Console

from pipeline.spec import Spec

APP_IMPORT_PATH = "serve.app:app_builder"


class ServeError(RuntimeError):
    pass


def load_schema(spec: Spec, version: str):
    """The input schema of a registered model version."""
    from pipeline import registry
    from pipeline.predictor import InputSchema, find_predictor_dir

    registry.configure(spec)
    with tempfile.TemporaryDirectory() as tmp:
        _, path, _ = registry.download_model(spec.name, str(version), tmp)
        return InputSchema.from_dict(json.loads((find_predictor_dir(path) / "schema.json").read_text()))


def resolve_variants(spec: Spec, model_ref: str = "champion",
                     treatment_ref: Optional[str] = None) -> dict[str, str]:
    """{control: version[, treatment: version]}: the treatment is `treatment_ref`, or the
    registry's @challenger when the spec has an ab_testing section."""
    from pipeline import registry

    registry.configure(spec)
    control, _ = registry.resolve_version(spec.name, model_ref)
    variants = {"control": control}
    if treatment_ref is None and spec.ab_testing is not None:
        treatment_ref = registry.champion_version(spec.name, registry.CHALLENGER)
    if treatment_ref is not None:
        treatment, _ = registry.resolve_version(spec.name, str(treatment_ref))
        if treatment != control:
            variants["treatment"] = treatment
    return variants


def ingress_config(spec: Spec, treatment_share: Optional[float] = None,
                   mode: Optional[str] = None) -> dict[str, Any]:
    split = spec.ab_testing.traffic_split if spec.ab_testing else None
    share = treatment_share if treatment_share is not None else (split.treatment if split else 0.0)
    return {"traffic_split": {"control": round(1.0 - share, 6), "treatment": round(share, 6)},
            "mode": mode or (spec.ab_testing.mode if spec.ab_testing else "split")}


def serve_config(spec: Spec, variants: dict[str, str], host: str, port: int,
                 user_config: dict[str, Any]) -> dict[str, Any]:
    """A Serve config document (ServeDeploySchema) for this spec and these versions."""
    rest = spec.serving("rest_api")
    text = Path(spec.filename).read_text() if Path(spec.filename).exists() else None
    if text is None:
        raise ServeError(f"cannot read the spec file {spec.filename}")
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port,
                         "request_timeout_s": rest.request_timeout if rest else 30.0},
        "applications": [{
            "name": spec.name,
            "route_prefix": rest.route_prefix if rest else "/",
            "import_path": APP_IMPORT_PATH,
            "args": {"spec_text": text, "spec_file": os.path.basename(spec.filename),
                     "base_dir": os.getcwd(), "variants": variants},
            "deployments": [{"name": "ingress", "user_config": user_config}],
        }],
    }


def deploy_config(config: dict[str, Any], wait_s: float = 300) -> None:
    """Apply a Serve config to the connected cluster and wait for the app to run."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    client = serve_start(http_options=config.get("http_options"))
    # A Serve config declares every application on the cluster: keep the others as deployed.
    ours = {app["name"] for app in config["applications"]}
    others = [app["deployed_app_config"] for name, app in
              (client.get_serve_details().get("applications") or {}).items()
              if name not in ours and app.get("deployed_app_config")]
    document = ServeDeploySchema.parse_obj({**config, "applications": others + config["applications"]})
    client.deploy_apps(document)
    name = config["applications"][0]["name"]
    deadline = time.time() + wait_s
    while time.time() < deadline:
        status = _app_status(name)
        if status == "RUNNING":
            return
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise ServeError(f"application {name} failed to deploy: {_app_message(name)}")
        time.sleep(0.5)
    raise ServeError(f"application {name} was not running after {wait_s:.0f} s: {_app_message(name)}")


def _app_status(name: str) -> Optional[str]:
    from ray import serve

    app = serve.status().applications.get(name)
    return str(app.status.value if hasattr(app.status, "value") else app.status) if app else None


def _app_message(name: str) -> str:
    from ray import serve

    app = serve.status().applications.get(name)
    if app is None:
        return "not found"
    details = [app.message] + [f"{d}: {s.message}" for d, s in app.deployments.items() if s.message]
    return "; ".join(m for m in details if m)[:2000]


def deployed_config(name: str) -> dict[str, Any]:
    """The Serve config the app was last deployed with (from the Serve controller)."""
    from ray.serve.context import _get_global_client
    from ray.serve.exceptions import RayServeException

    try:
        details = _get_global_client().get_serve_details()
    except RayServeException:
        raise ServeError("Serve is not running on this cluster: start the app with `rayline serve`") from None
    app = (details.get("applications") or {}).get(name)
    if not app or not app.get("deployed_app_config"):
        raise ServeError(f"no Serve application {name!r} is running on this cluster")
    return {"proxy_location": details.get("proxy_location") or "EveryNode",
            "http_options": {k: v for k, v in (details.get("http_options") or {}).items()
                             if k in ("host", "port", "request_timeout_s")},
            "applications": [app["deployed_app_config"]]}


ADDRESS_FILE = Path(".rayline") / "serve.address"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(size: int = 64, low: int = 20000, high: int = 32000) -> int:
    """The first of `size` consecutive ports that are all free now, from a random start."""
    import random
    import socket

    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return True
            except OSError:
                return False

    rng = random.Random()
    for _ in range(200):
        start = rng.randrange(low, high - size)
        if all(free(p) for p in range(start, start + size)):
            return start
    raise ServeError(f"no {size} consecutive free ports between {low} and {high}")


def isolated_serve_ports() -> dict[str, str]:
    """Ports for a Serve with the HAProxy ingress that another cluster on this machine will
    not also pick. HAProxy's metrics and stats ports, and the fallback Serve proxy it sends
    requests to while no ingress replica is up (8500, gRPC 9500), are fixed by default; each
    cluster's controller hands its ingress replicas ports from 30000 (HTTP) and 40000 (gRPC)
    without knowing of the others. Two clusters on one host then share a port, and one app's
    HAProxy answers with the other's app (seen: a 401 from a neighbour's API key), or the
    second fallback proxy cannot bind and Serve does not start."""
    http, grpc = free_port_block(), free_port_block()
    return {"RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(_free_port()),
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + 63),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc + 63)}


def connect(verbose: bool = False) -> bool:
    """Attach to the cluster the app runs on: RAY_ADDRESS, or the local one `rayline serve`
    started from this directory (it leaves its address in .rayline/serve.address)."""
    from pipeline import execution

    if not os.environ.get("RAY_ADDRESS"):
        if not ADDRESS_FILE.exists():
            raise ServeError("no running app to talk to: start `rayline serve SPEC` in this "
                             "directory, or set RAY_ADDRESS to the cluster it runs on")
        return execution.ensure_ray(address=ADDRESS_FILE.read_text().strip(), verbose=verbose)
    return execution.ensure_ray(verbose=verbose)


def serve_forever(spec: Spec, host: Optional[str], port: Optional[int], model_ref: str,
                  treatment: Optional[str], detach: bool, verbose: bool, console: Console) -> None:
    rest = spec.serving("rest_api")
    host = host or (rest.host if rest else "127.0.0.1")
    port = port or (rest.port if rest else 8000)
    if detach and not os.environ.get("RAY_ADDRESS"):
        raise ServeError("--detach needs a running cluster: set RAY_ADDRESS (e.g. after `ray start --head`)")
    stop = threading.Event()
    if not detach:
        # Installed before deploying, so an interrupt during start-up still cleans up.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    with console.status("[bold]Starting Ray Serve[/]…"):
        variants = resolve_variants(spec, model_ref, treatment)
        from pipeline import execution

        if not os.environ.get("RAY_ADDRESS") and (rest is None or rest.ingress == "haproxy"):
            # Read when Serve's controller starts, so it must be set before the local Ray is.
            # Ports of our own let two apps run side by side on one machine.
            os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
            for key, value in isolated_serve_ports().items():
                os.environ.setdefault(key, value)
        started = execution.ensure_ray(verbose=verbose)
        if started:
            import ray

            ADDRESS_FILE.parent.mkdir(exist_ok=True)
            ADDRESS_FILE.write_text(ray.get_runtime_context().gcs_address)
        start = time.perf_counter()
        deploy_config(serve_config(spec, variants, host, port, ingress_config(spec)))
    shown = ", ".join(f"{k} v{v}" for k, v in variants.items())
    console.print(f"[green]✓[/] serving [bold]{spec.name}[/] ({shown}) at http://{host}:{port}"
                  f"{rest.route_prefix if rest else '/'}  [dim]({time.perf_counter() - start:.1f} s)[/]")
    console.print(f"  POST /predict · POST /feedback · GET /health /ready /metadata · docs at http://{host}:{port}/docs")
    if detach:
        return
    console.print("  [dim]Ctrl-C to stop[/]")
    stop.wait()
    console.print("stopping…")
    import ray
    from ray import serve

    try:
        serve.delete(spec.name)
        if started:
            serve.shutdown()  # stops HAProxy too, which would outlive the cluster otherwise
    finally:
        if started:
            ADDRESS_FILE.unlink(missing_ok=True)
            ray.shutdown()


def set_traffic(spec: Spec, treatment_share: Optional[float] = None, mode: Optional[str] = None) -> dict:
    """Change the live split (and/or mode) of the running app: only the ingress' user_config
    changes, so no replica restarts and no request fails."""
    config = deployed_config(spec.name)
    app = config["applications"][0]
    if "treatment" not in app["args"]["variants"] and (treatment_share or 0) > 0:
        raise ServeError("the app has no treatment variant: start one with `rayline ab start`")
    current = next((d.get("user_config") for d in app.get("deployments", []) if d["name"] == "ingress"), None) or {}
    share = treatment_share if treatment_share is not None else current.get("traffic_split", {}).get("treatment", 0.0)
    user_config = {"traffic_split": {"control": round(1.0 - share, 6), "treatment": round(share, 6)},
                   "mode": mode or current.get("mode", "split")}
    app["deployments"] = [d for d in app.get("deployments", []) if d["name"] != "ingress"] + [
        {**next((d for d in app.get("deployments", []) if d["name"] == "ingress"), {"name": "ingress"}),
         "user_config": user_config}]
    deploy_config(config)
    return user_config


def set_variants(spec: Spec, treatment: Optional[str], share: Optional[float] = None) -> dict[str, str]:
    """Put a registered version in as treatment (alias @challenger), or take the treatment out."""
    from pipeline import registry

    config = deployed_config(spec.name)
    app = config["applications"][0]
    variants = dict(app["args"]["variants"])
    registry.configure(spec)
    client = __import__("mlflow").MlflowClient()
    if treatment is None:
        variants.pop("treatment", None)
        try:
            client.delete_registered_model_alias(spec.name, registry.CHALLENGER)
        except Exception:  # no alias to remove
            pass
        user_config = {"traffic_split": {"control": 1.0, "treatment": 0.0}, "mode": "split"}
    else:
        version, _ = registry.resolve_version(spec.name, str(treatment))
        if version == variants["control"]:
            raise ServeError(f"version {version} is already the control")
        variants["treatment"] = version
        client.set_registered_model_alias(spec.name, registry.CHALLENGER, version)
        user_config = ingress_config(spec, share)
    app["args"]["variants"] = variants
    app["deployments"] = [{**d, "user_config": user_config} if d["name"] == "ingress" else d
                          for d in app.get("deployments", [])] or [{"name": "ingress", "user_config": user_config}]
    deploy_config(config)
    return variants
