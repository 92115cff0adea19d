"""REST serving: the project's Ray Serve app against plain FastAPI + uvicorn with the same model.

Both serve the same registered churn model (the project's Predictor: fitted features + logistic
regression) behind the same typed request model; the baseline is one uvicorn process, the
project is `rayline serve` (Ray Serve, HAProxy ingress, FastAPI ingress deployment -> model
deployment). Load: wrk against 127.0.0.1, single-record POST /predict at 8 connections for 10 s,
three rounds alternating the two servers; medians. Then list requests of 1,000 records to the
project for records/s.

Needs wrk (Debian: apt-get install wrk). Runs its own Ray, MLflow store and ports; ~4 minutes.
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

    base_port, proj_port = free_port(), free_port()
    baseline = subprocess.Popen([str(BIN / "uvicorn"), "baseline_app:app", "--port", str(base_port),
                                 "--log-level", "warning", "--no-access-log"],
                                cwd=work, env={**env, "TRACKING_URI": tracking, "PYTHONPATH": str(work)})
    project = subprocess.Popen([str(BIN / "rayline"), "serve", "spec.yaml", "--port", str(proj_port)],
                               cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(f"http://127.0.0.1:{base_port}/health")
        wait(f"http://127.0.0.1:{proj_port}/ready")
        urls = {"baseline": f"http://127.0.0.1:{base_port}/predict",
                "project": f"http://127.0.0.1:{proj_port}/predict"}
        for url in urls.values():  # warm both up
            wrk(url, RECORD, work, seconds=3)
        results: dict[str, list[dict]] = {"baseline": [], "project": []}
        for r in range(ROUNDS):
            for name in ("baseline", "project") if r % 2 == 0 else ("project", "baseline"):
                res = wrk(urls[name], RECORD, work)
                results[name].append(res)
                print(f"round {r + 1} {name:8s}: {res['rps']:7.1f} req/s  p50 {res['p50']:6.1f} ms  "
                      f"p99 {res['p99']:6.1f} ms  non-2xx {res['errors']}", flush=True)
        batch = [dict(RECORD, customer_id=f"C{i}") for i in range(1000)]
        lists = wrk(urls["project"], batch, work)
        base_lists = wrk(urls["baseline"], batch, work)
    finally:
        project.send_signal(signal.SIGINT)
        baseline.terminate()
        for proc in (project, baseline):
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
    med = {n: {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50", "p99")}
           for n, rs in results.items()}
    ratio = med["project"]["rps"] / med["baseline"]["rps"]
    p99_ratio = med["project"]["p99"] / med["baseline"]["p99"]
    records = lists["rps"] * 1000
    print(f"baseline (plain FastAPI + uvicorn): {med['baseline']['rps']:.1f} req/s, p50 "
          f"{med['baseline']['p50']:.1f} ms, p99 {med['baseline']['p99']:.1f} ms")
    print(f"project (rayline serve, Ray Serve):  {med['project']['rps']:.1f} req/s, p50 "
          f"{med['project']['p50']:.1f} ms, p99 {med['project']['p99']:.1f} ms "
          f"(p99 {p99_ratio:.2f}x the baseline's)")
    print(f"lists of 1,000 records: project {records:,.0f} records/s "
          f"(p99 {lists['p99']:.0f} ms), baseline {base_lists['rps'] * 1000:,.0f} records/s")
    print(f"serve_rest: ratio={ratio:.2f} project_rps={med['project']['rps']:.1f} "
          f"baseline_rps={med['baseline']['rps']:.1f} project_p99_ms={med['project']['p99']:.1f} "
          f"baseline_p99_ms={med['baseline']['p99']:.1f} p99_ratio={p99_ratio:.2f} "
          f"list_records_per_s={records:.0f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
