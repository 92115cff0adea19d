"""`make demo`: the churn example from spec to HTTP predictions, through the real commands.

check the spec -> `rayline run` (Ray Data, Great Expectations, Ray Train, MLflow) ->
`rayline serve` (Ray Serve) -> real HTTP requests -> shut down. Exits non-zero if any step fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.json import JSON
from rich.rule import Rule

ROOT = Path(__file__).resolve().parents[2]
SPEC = "examples/churn/spec.yaml"
BIN = Path(sys.executable).parent
console = Console()

RECORDS = [
    {"customer_id": "C900001", "tenure_months": 2, "monthly_charges": 95.2, "total_charges": 190.4,
     "contract": "month-to-month", "payment_method": "electronic_check", "internet_service": "fiber_optic",
     "senior_citizen": 1, "num_support_calls": 5},
    {"customer_id": "C900002", "tenure_months": 58, "monthly_charges": 24.9, "total_charges": None,
     "contract": "two_year", "payment_method": "credit_card", "internet_service": "dsl",
     "senior_citizen": 0, "num_support_calls": 0},
    {"customer_id": "C900003", "tenure_months": 14, "monthly_charges": 70.0, "total_charges": 980.0,
     "contract": "one_year", "payment_method": None, "internet_service": "none",
     "senior_citizen": 0, "num_support_calls": 2},
]


def step(title: str) -> None:
    console.print(Rule(f"[bold]{title}"))


def run(*args: str, env: dict) -> None:
    console.print(f"[dim]$ {' '.join(args)}[/]")
    result = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=ROOT, env=env)
    if result.returncode != 0:
        console.print(f"[red]{args[0]} {args[1]} failed with exit code {result.returncode}[/]")
        sys.exit(result.returncode)


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rayline serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:  # every model loaded
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url}/ready did not answer 200 in {timeout:.0f} s")


def show(method: str, path: str, response: httpx.Response, expect: int = 200) -> None:
    console.print(f"[bold]{method} {path}[/] -> [{'green' if response.is_success else 'yellow'}]"
                  f"{response.status_code}[/]")
    console.print(JSON(json.dumps(response.json())))
    if response.status_code != expect:  # the demo proves the line works: a wrong answer fails it
        raise SystemExit(f"{method} {path}: expected {expect}, got {response.status_code}")


def main() -> int:
    # Token authentication stays on for users; the demo's own local clusters run without it.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    if not (ROOT / "examples/churn/data/customers.csv").exists():
        run("python", "examples/churn/generate_data.py", env=env)

    step("1. Check the spec")
    run("rayline", "check", SPEC, env=env)

    step("2. Train: ingest, validate, features, Ray Train, evaluate, MLflow, register")
    run("rayline", "run", SPEC, env=env)

    step("3. Serve the champion with Ray Serve")
    port = free_port(int(os.environ.get("DEMO_PORT", "8000")))
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([str(BIN / "rayline"), "serve", SPEC, "--port", str(port)], cwd=ROOT, env=env)
    try:
        wait_healthy(url, serve)

        step("4. Predictions over HTTP")
        show("GET", "/health", httpx.get(f"{url}/health"))
        show("POST", "/predict (one record)", httpx.post(f"{url}/predict", json=RECORDS[0], timeout=30))
        show("POST", "/predict (three records)", httpx.post(f"{url}/predict", json=RECORDS, timeout=30))
        bad = {**RECORDS[0], "tenure_months": "three"}
        show("POST", "/predict (a wrong type: rejected)", httpx.post(f"{url}/predict", json=bad, timeout=30),
             expect=422)
        docs = httpx.get(f"{url}/openapi.json").json()
        console.print(f"[bold]GET /openapi.json[/] -> {len(docs['paths'])} paths: {', '.join(docs['paths'])}")
    finally:
        step("5. Shut down")
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(90)
        except subprocess.TimeoutExpired:
            serve.kill()
    tracking = f"sqlite:///{ROOT / '.rayline' / 'mlflow.db'}"
    console.print(f"[green]demo complete.[/] Browse the runs: "
                  f"{BIN / 'mlflow'} ui --backend-store-uri {tracking}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
