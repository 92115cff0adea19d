"""`rayline serve`: deploy the app on Ray Serve and keep it up until interrupted."""

from __future__ import annotations

import signal
import threading
import time
from typing import Optional

from rich.console import Console

from pipeline.spec import Spec


class ServeError(RuntimeError):
    pass


def model_info(spec: Spec, model_ref: str):
    """(input schema, info dict) of the registered version `model_ref` (alias or number)."""
    import tempfile

    from pipeline import registry
    from pipeline.predictor import InputSchema, find_predictor_dir
    import json

    registry.configure(spec)
    with tempfile.TemporaryDirectory() as tmp:
        version, path, mv = registry.download_model(spec.name, model_ref, tmp)
        folder = find_predictor_dir(path)
        schema = InputSchema.from_dict(json.loads((folder / "schema.json").read_text()))
        meta = json.loads((folder / "meta.json").read_text())
    info = {"name": spec.name, "version": version, "family": meta.get("family", "?"),
            "run_id": mv.run_id or meta.get("run_id", ""), "id_column": meta.get("id_column")}
    return schema, info


def deploy(spec: Spec, host: str, port: int, model_ref: str = "champion") -> dict:
    from ray import serve

    from serve.app import build_app

    schema, info = model_info(spec, model_ref)
    rest = spec.serving("rest_api")
    serve.start(http_options={"host": host, "port": port,
                              "request_timeout_s": rest.request_timeout if rest else 30.0})
    app = build_app(spec, schema, {k: v for k, v in info.items()})
    serve.run(app, name=spec.name, route_prefix=rest.route_prefix if rest else "/", blocking=False)
    return info


def serve_forever(spec: Spec, host: Optional[str], port: Optional[int], model_ref: str,
                  detach: bool, verbose: bool, console: Console) -> None:
    import os

    from pipeline._internal import runtime

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
        started = runtime.ensure_ray(verbose=verbose)
        start = time.perf_counter()
        info = deploy(spec, host, port, model_ref)
    console.print(f"[green]✓[/] serving [bold]{spec.name}[/] v{info['version']} ({info['family']}) "
                  f"at http://{host}:{port}{rest.route_prefix if rest else '/'}  "
                  f"[dim]({time.perf_counter() - start:.1f} s)[/]")
    console.print(f"  POST /predict · GET /health · docs at http://{host}:{port}/docs")
    if detach:
        return
    console.print("  [dim]Ctrl-C to stop[/]")
    stop.wait()
    console.print("stopping…")
    from ray import serve
    import ray

    try:
        serve.delete(spec.name)
    finally:
        if started:
            ray.shutdown()  # takes Serve's controller and proxies with it
