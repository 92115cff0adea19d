"""A/B testing on the live Serve app: `rayline ab start / set / stop`, sticky assignment, the
realised split, live weight changes with no failed request, and shadow mode."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from serve.routing import assign

pytestmark = pytest.mark.integration

RECORD = {"customer_id": "C900001", "tenure_months": 3, "monthly_charges": 89.5,
          "total_charges": 268.5, "contract": "month-to-month", "payment_method": "electronic_check",
          "internet_service": "fiber_optic", "senior_citizen": 0, "num_support_calls": 4}


@pytest.fixture(scope="module")
def treatment_version(workspace, served) -> str:
    """A second registered version (the same model files as v1): enough to tell variants apart."""
    import mlflow

    mlflow.set_tracking_uri(workspace.tracking_uri)  # MLflow resolves models:/ sources globally
    client = mlflow.MlflowClient(workspace.tracking_uri, workspace.tracking_uri)
    v1 = client.get_model_version("churn", "1")
    v2 = client.create_model_version("churn", v1.source, run_id=v1.run_id)
    yield str(v2.version)
    workspace.rayline("ab", "stop", "spec.yaml")


def predict(served, users: list[str]) -> list[dict]:
    body = [{**RECORD, "customer_id": f"C{u}", "user_id": u} for u in users]
    response = httpx.post(f"{served.url}/predict", json=body, headers=served.headers, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_ab_start_routes_by_user_and_sticks(served, workspace, treatment_version):
    result = workspace.rayline("ab", "start", "spec.yaml", "--treatment", treatment_version, "--share", "50%")
    assert result.returncode == 0, result.stderr
    assert f"treatment v{treatment_version}" in result.stdout
    assert httpx.get(f"{served.url}/ready").json() == {
        "ready": True, "variants": {"control": "1", "treatment": treatment_version}}
    users = [f"user-{i}" for i in range(400)]
    first = predict(served, users)
    second = predict(served, list(reversed(users)))
    by_user = {u: p["variant"] for u, p in zip(users, first)}
    assert by_user == {u: p["variant"] for u, p in zip(reversed(users), second)}  # sticky
    expected = {u: assign(u, {"control": 0.5, "treatment": 0.5}, "churn") for u in users}
    assert by_user == expected
    assert {p["model_version"] for p in first if p["variant"] == "treatment"} == {treatment_version}
    assert 140 < sum(v == "treatment" for v in by_user.values()) < 260
    meta = httpx.get(f"{served.url}/metadata", headers=served.headers).json()
    assert meta["traffic_split"] == {"control": 0.5, "treatment": 0.5}
    import mlflow
    client = mlflow.MlflowClient(workspace.tracking_uri, workspace.tracking_uri)
    assert str(client.get_model_version_by_alias("churn", "challenger").version) == treatment_version


def test_ab_set_changes_the_split_live_without_failures(served, workspace, treatment_version):
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=60) as client:
            i = 0
            while not stop.is_set():
                i += 1
                r = client.post(f"{served.url}/predict", headers=served.headers,
                                json={**RECORD, "user_id": f"live-{i}"})
                statuses.append(r.status_code)

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        time.sleep(2)
        result = workspace.rayline("ab", "set", "spec.yaml", "--treatment", "10%")
        assert result.returncode == 0, result.stderr
        assert "treatment 10%" in result.stdout
        time.sleep(2)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert len(statuses) > 20 and set(statuses) == {200}, statuses
    meta = httpx.get(f"{served.url}/metadata", headers=served.headers).json()
    assert meta["traffic_split"] == {"control": 0.9, "treatment": 0.1}
    users = [f"split-{i}" for i in range(1000)]
    share = sum(p["variant"] == "treatment" for p in predict(served, users)) / len(users)
    assert 0.07 < share < 0.13, share


def test_shadow_mode_scores_treatment_without_returning_it(served, workspace, treatment_version):
    import sqlite3

    assert workspace.rayline("ab", "set", "spec.yaml", "--mode", "shadow").returncode == 0
    response = httpx.post(f"{served.url}/predict", headers=served.headers,
                          json=[{**RECORD, "user_id": f"shadow-{i}"} for i in range(20)], timeout=60)
    body = response.json()
    assert {p["variant"] for p in body["predictions"]} == {"control"}
    deadline = time.time() + 20
    rows: list = []
    while time.time() < deadline and len(rows) < 20:
        time.sleep(1.5)
        httpx.get(f"{served.url}/metadata", headers=served.headers)
        with sqlite3.connect(workspace.path / ".rayline" / "serving.db") as db:
            rows = db.execute("select variant, shadow from predictions where request_id = ? and shadow = 1",
                              (body["request_id"],)).fetchall()
    assert len(rows) == 20 and {r[0] for r in rows} == {"treatment"}
    assert workspace.rayline("ab", "set", "spec.yaml", "--mode", "split").returncode == 0


def test_ab_stop_sends_everything_to_control(served, workspace, treatment_version):
    result = workspace.rayline("ab", "stop", "spec.yaml")
    assert result.returncode == 0, result.stderr
    assert httpx.get(f"{served.url}/ready").json() == {"ready": True, "variants": {"control": "1"}}
    assert {p["variant"] for p in predict(served, [f"after-{i}" for i in range(50)])} == {"control"}
