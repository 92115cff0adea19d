"""REST serving: the project's Ray Serve app against plain FastAPI + uvicorn with the same model.

Both serve the same registered churn model (the project's Predictor: fitted features + logistic
regression) behind the same typed request model; the baseline is one uvicorn process, the
project is `rayline serve` (Ray Serve, HAProxy ingress, FastAPI ingress deployment -> model
deployment), then again with `placement: ingress` (the models scored inside the ingress).
Load: wrk against 127.0.0.1, single-record POST /predict at 8 connections for 10 s, three rounds
alternating each layout with the baseline; medians. Then list requests of 1,000 records for
records/s. `ratio` is the default layout's; `ratio_ingress` the in-ingress one's.

Needs wrk (Debian: apt-get install wrk). Runs its own Ray, MLflow store and ports; ~6 minutes.
Last line: serve_rest: ratio=<project req/s / baseline req/s> ...
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RECORD = {"customer_id": "C1", "tenure_months": 3, "monthly_charges": 80.5, "total_charges": 240.0,
          "contract": "month-to-month", "payment_method": "electronic_check",
          "internet_service": "fiber_optic", "senior_citizen": 0, "num_support_calls": 4}
ROUNDS, SECONDS, CONNECTIONS = 3, 10, 8

BASELINE = textwrap.dedent('''
    """The plain script: FastAPI + uvicorn, the model loaded once, one process."""
    import os, uuid
    from typing import List, Union
    import mlflow
    from fastapi import Body, FastAPI
    from pipeline.predictor import Predictor, find_predictor_dir
    from serve.schemas import record_model

    mlflow.set_tracking_uri(os.environ["TRACKING_URI"])
    path = mlflow.artifacts.download_artifacts("models:/churn@champion")
    predictor = Predictor.load(find_predictor_dir(path))
    Record = record_model(predictor.schema, "churn")
    app = FastAPI()

    @app.post("/predict")
    def predict(payload: Union[Record, List[Record]] = Body(...)):
        records = payload if isinstance(payload, list) else [payload]
        rows = [r.model_dump() for r in records]
        return {"request_id": uuid.uuid4().hex, "predictions": predictor.predict_records(rows)}

    @app.get("/health")
    def health():
        return {"status": "ok"}
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not come up")


def wrk(url: str, body: list | dict, workdir: Path, seconds: int = SECONDS) -> dict:
    script = workdir / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(json.dumps(body))}\n")
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(script),
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    pct = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    return {"rps": rps, "p50": pct["50"], "p99": pct["99"], "errors": int(errors.group(1)) if errors else 0}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> int:
    if not shutil.which("wrk"):
        print("this benchmark needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="rayline-serve-bench-"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    spec_text = (ROOT / "examples/churn/spec.yaml").read_text().replace(
        "examples/churn/data/customers.csv", str(ROOT / "examples/churn/data/customers.csv")).replace(
        "baseline_models: [logistic_regression, random_forest, xgboost]", "baseline_models: [logistic_regression]")
    (work / "spec.yaml").write_text(spec_text)
    print("training the model (rayline run) ...", flush=True)
    subprocess.run([str(BIN / "rayline"), "run", "spec.yaml"], cwd=work, env=env, check=True,
                   capture_output=True)
    tracking = f"sqlite:///{work / '.rayline' / 'mlflow.db'}"
    (work / "baseline_app.py").write_text(BASELINE)

    (work / "spec_ingress.yaml").write_text(spec_text.replace(
        "    port: 8000\n", "    port: 8000\n    placement: ingress\n"))
    base_port = free_port()
    baseline = subprocess.Popen([str(BIN / "uvicorn"), "baseline_app:app", "--port", str(base_port),
                                 "--log-level", "warning", "--no-access-log"],
                                cwd=work, env={**env, "TRACKING_URI": tracking, "PYTHONPATH": str(work)})
    results: dict[str, list[dict]] = {"baseline": [], "project": [], "ingress": []}
    lists: dict[str, dict] = {}
    try:
        wait(f"http://127.0.0.1:{base_port}/health")
        base_url = f"http://127.0.0.1:{base_port}/predict"
        wrk(base_url, RECORD, work, seconds=3)
        # The default layout (ingress -> one model deployment per version), then the models
        # loaded in the ingress (`placement: ingress`); each alternates with the baseline.
        for name, spec_file in (("project", "spec.yaml"), ("ingress", "spec_ingress.yaml")):
            port = free_port()
            project = subprocess.Popen([str(BIN / "rayline"), "serve", spec_file, "--port", str(port)],
                                       cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait(f"http://127.0.0.1:{port}/ready")
                url = f"http://127.0.0.1:{port}/predict"
                wrk(url, RECORD, work, seconds=3)
                for r in range(ROUNDS):
                    for who in (("baseline", name) if r % 2 == 0 else (name, "baseline")):
                        res = wrk(base_url if who == "baseline" else url, RECORD, work)
                        results[who].append(res)
                        print(f"round {r + 1} {who:8s}: {res['rps']:7.1f} req/s  p50 {res['p50']:6.1f} ms  "
                              f"p99 {res['p99']:6.1f} ms  non-2xx {res['errors']}", flush=True)
                batch = [dict(RECORD, customer_id=f"C{i}") for i in range(1000)]
                lists[name] = wrk(url, batch, work)
                if "baseline" not in lists:
                    lists["baseline"] = wrk(base_url, batch, work)
            finally:
                project.send_signal(signal.SIGINT)
                try:
                    project.wait(120)
                except subprocess.TimeoutExpired:
                    project.kill()
    finally:
        baseline.terminate()
        try:
            baseline.wait(30)
        except subprocess.TimeoutExpired:
            baseline.kill()
    med = {n: {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50", "p99")}
           for n, rs in results.items()}
    ratio = med["project"]["rps"] / med["baseline"]["rps"]
    ratio_ingress = med["ingress"]["rps"] / med["baseline"]["rps"]
    p99_ratio = med["project"]["p99"] / med["baseline"]["p99"]
    records = lists["project"]["rps"] * 1000
    print(f"baseline (plain FastAPI + uvicorn): {med['baseline']['rps']:.1f} req/s, p50 "
          f"{med['baseline']['p50']:.1f} ms, p99 {med['baseline']['p99']:.1f} ms")
    for name, label in (("project", "default: ingress -> model deployment"), ("ingress", "placement: ingress")):
        print(f"project ({label}): {med[name]['rps']:.1f} req/s, p50 {med[name]['p50']:.1f} ms, "
              f"p99 {med[name]['p99']:.1f} ms (p99 {med[name]['p99'] / med['baseline']['p99']:.2f}x the "
              f"baseline's), lists of 1,000: {lists[name]['rps'] * 1000:,.0f} records/s "
              f"(p99 {lists[name]['p99']:.0f} ms)")
    print(f"baseline lists of 1,000: {lists['baseline']['rps'] * 1000:,.0f} records/s")
    print(f"serve_rest: ratio={ratio:.2f} project_rps={med['project']['rps']:.1f} "
          f"baseline_rps={med['baseline']['rps']:.1f} project_p99_ms={med['project']['p99']:.1f} "
          f"baseline_p99_ms={med['baseline']['p99']:.1f} p99_ratio={p99_ratio:.2f} "
          f"list_records_per_s={records:.0f} ratio_ingress={ratio_ingress:.2f} "
          f"ingress_rps={med['ingress']['rps']:.1f} ingress_p99_ms={med['ingress']['p99']:.1f} "
          f"ingress_list_records_per_s={lists['ingress']['rps'] * 1000:.0f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
