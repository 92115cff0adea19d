"""Deploying the Serve app: `rayline serve` and `rayline serve build` (the A/B commands that
change a running app are in serve/ab.py).

Everything goes through a Serve config (the same document `serve deploy` and a KubeRay
RayService take): the app is `serve.app:app_builder` with the spec's text and the variants'
versions as args, and the traffic split (`pipeline.lifecycle.Traffic`) as the ingress'
user_config.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

from rich.console import Console

from pipeline.errors import RaylineError
from pipeline.lifecycle import Traffic
from pipeline.spec import Spec

APP_IMPORT_PATH = "serve.app:app_builder"


class ServeError(RaylineError, RuntimeError):
    """The app cannot be deployed, found or changed."""

    title = "cannot serve"


def resolve_variants(spec: Spec, model_ref: str = "champion",
                     treatment_ref: Optional[str] = None) -> dict[str, str]:
    """{control: version[, treatment: version]}: the treatment is `treatment_ref`, or the
    registry's @challenger when the spec has an ab_testing section."""
    from pipeline import registry

    registry.configure_for(spec)
    control, _ = registry.resolve_version(spec.name, model_ref)
    variants = {"control": control}
    if treatment_ref is None and spec.ab_testing is not None:
        treatment_ref = registry.alias_version(spec.name, registry.CHALLENGER)
    if treatment_ref is not None:
        treatment, _ = registry.resolve_version(spec.name, str(treatment_ref))
        if treatment != control:
            variants["treatment"] = treatment
    return variants


def ingress_config(spec: Spec, treatment_share: Optional[float] = None,
                   mode: Optional[str] = None) -> dict[str, Any]:
    """The ingress' user_config: the spec's traffic split and mode, either replaced when given."""
    return Traffic.from_spec(spec.ab_testing, treatment_share, mode).to_user_config()


def serve_config(spec: Spec, variants: dict[str, str], host: str, port: int,
                 user_config: dict[str, Any]) -> dict[str, Any]:
    """A Serve config document (ServeDeploySchema) for this spec and these versions."""
    rest = spec.serving_or_defaults("rest_api")
    text = Path(spec.filename).read_text() if Path(spec.filename).exists() else None
    if text is None:
        raise ServeError(f"cannot read the spec file {spec.filename}")
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port, "request_timeout_s": rest.request_timeout},
        "applications": [{
            "name": spec.name,
            "route_prefix": rest.route_prefix,
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
    rest = spec.serving_or_defaults("rest_api")
    host = host or rest.host
    port = port or rest.port
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

        if not os.environ.get("RAY_ADDRESS") and rest.ingress == "haproxy":
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
                  f"{rest.route_prefix}  [dim]({time.perf_counter() - start:.1f} s)[/]")
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
