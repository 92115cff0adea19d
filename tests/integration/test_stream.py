"""`rayline stream` against a real Kafka-protocol broker (tansu) and the registered churn model.

Each test writes a copy of the workspace spec with a `streaming` serving option on its own
topics and consumer group, runs `rayline stream` as a subprocess (`--assign`: tansu's group join
is slow and never recovers from a killed member, see tests/integration/kafka.py) and reads what
it wrote back from the broker.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import BIN, free_port
from tests.integration.kafka import kafka_broker  # noqa: F401  (fixture)
from tests.integration.services import customer_records

pytestmark = pytest.mark.integration

N_VALID = 10_000
N_INVALID = 200


def stream_spec(workspace, broker, name: str, partitions: int = 3) -> Path:
    """A copy of the workspace spec streaming from `<name>-in` to `<name>-out` / `<name>-dead`."""
    broker.create_topics(f"{name}-in", partitions=partitions)
    broker.create_topics(f"{name}-out", f"{name}-dead", partitions=1)
    text = workspace.spec.read_text()
    marker = "\nserving_options:\n"
    assert marker in text
    after = text.split(marker, 1)[1]
    dash = " " * (len(after) - len(after.lstrip(" ")))     # the list's own indentation
    fields = {"bootstrap_servers": broker.bootstrap, "input_topic": f"{name}-in",
              "output_topic": f"{name}-out", "dead_letter_topic": f"{name}-dead",
              "group_id": f"{name}-group", "latency_target": "100ms"}
    option = f"{dash}- name: streaming\n" + "".join(f"{dash}  {k}: {v}\n" for k, v in fields.items())
    path = workspace.path / f"{name}.yaml"
    path.write_text(text.replace(marker, marker + option, 1))
    return path


def message(i: int, record: dict) -> tuple[bytes, bytes, str]:
    """(key, value, kind): one message in 51 is broken (four ways in turn), the rest are records."""
    record = dict(record)
    kind = {0: "wrong_type", 51: "missing", 102: "bad_json", 153: "out_of_range"}.get(i % 204, "ok")
    if kind == "wrong_type":
        record["tenure_months"] = "twelve"
    elif kind == "missing":
        record.pop("contract")
    elif kind == "out_of_range":
        if i % 408 == 153:
            record["tenure_months"] = 500
        else:
            record["contract"] = "weekly"
    value = b'{"customer_id": "C0' if kind == "bad_json" else json.dumps(record).encode()
    return f"m{i:05d}".encode(), value, kind


def produce(broker, topic: str, messages, rate: float | None = None) -> dict[bytes, int]:
    """Send (key, value) pairs, at `rate` per second if given. Returns key -> timestamp (ms)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    stamps: dict[bytes, int] = {}
    start = time.perf_counter()
    for n, (key, value, _) in enumerate(messages):
        if rate is not None:
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        stamps[key] = int(time.time() * 1000)
        producer.produce(topic, key=key, value=value, timestamp=stamps[key])
        producer.poll(0)
    assert producer.flush(30) == 0
    return stamps


def start_stream(workspace, spec: Path, *args: str, log_name: str) -> tuple[subprocess.Popen, Path]:
    log = workspace.path / log_name
    with open(log, "w") as err:
        proc = subprocess.Popen([str(BIN / "rayline"), "stream", spec.name, "--assign", *args],
                                cwd=workspace.path, env=workspace.env, stdout=subprocess.PIPE,
                                stderr=err, text=True)
    return proc, log


def wait_started(proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "streaming churn" in log.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"rayline stream exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"rayline stream did not start in {timeout:.0f} s:\n{log.read_text()}")


def summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])["stream"]


def metric(text: str, name: str, label: str = "") -> float:
    """The value of the one sample of `name` (with `label` among its labels) in a /metrics page."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name + "{") and label in line]
    assert len(values) == 1, (name, label, values)
    return values[0]


def registered_predictor(workspace, version: str):
    import tempfile

    import mlflow

    from pipeline.predictor import Predictor, find_predictor_dir

    mlflow.set_tracking_uri(workspace.tracking_uri)
    mlflow.set_registry_uri(workspace.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/churn/{version}", dst_path=tmp)
        return Predictor.load(find_predictor_dir(path))


def test_every_message_is_predicted_or_dead_lettered_once(trained, workspace, kafka_broker):
    spec = stream_spec(workspace, kafka_broker, "exact")
    records = customer_records()
    total = N_VALID + N_INVALID
    messages = [message(i, records[i % len(records)]) for i in range(total)]
    stamps = produce(kafka_broker, "exact-in", messages)

    result = subprocess.run([str(BIN / "rayline"), "stream", spec.name, "--assign",
                             "--max-messages", str(total), "--idle-exit", "60"],
                            cwd=workspace.path, env=workspace.env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr
    stats = summary(result.stdout)
    invalid = {key: kind for key, _, kind in messages if kind != "ok"}
    assert len(invalid) == N_INVALID
    assert (stats["consumed"], stats["predicted"], stats["invalid"]) == (total, N_VALID, N_INVALID), stats
    assert stats["p99_ms"] is not None

    out = kafka_broker.read_all("exact-out", expect=N_VALID)
    dead = kafka_broker.read_all("exact-dead", expect=N_INVALID)
    assert (len(out), len(dead)) == (N_VALID, N_INVALID)
    assert {m.key() for m in dead} == set(invalid)
    valid = {key: value for key, value, kind in messages if kind == "ok"}
    assert sorted(m.key() for m in out) == sorted(valid)      # each once, keyed like its input
    # A clean exit commits everything it wrote.
    assert kafka_broker.committed("exact-group", "exact-in") == kafka_broker.end_offsets("exact-in")

    # Dead letters carry the original value and an error that names the field.
    expected_field = {"wrong_type": "tenure_months", "missing": "contract", "bad_json": None}
    sent = {key: value for key, value, _ in messages}
    for m in dead:
        body, kind = json.loads(m.value()), invalid[m.key()]
        assert body["value"] == sent[m.key()].decode()
        fields = {e["field"] for e in body["errors"]}
        if kind == "out_of_range":
            assert fields & {"tenure_months", "contract"}, body
        else:
            assert expected_field[kind] in fields, body
        if kind == "bad_json":
            assert body["errors"][0]["type"] == "json_invalid"

    # Predictions: what Predictor.predict_records gives for the same records, with the input's
    # id, timestamp and position.
    bodies = {m.key(): json.loads(m.value()) for m in out}
    versions = {b["model"]["version"] for b in bodies.values()}
    assert len(versions) == 1
    predictor = registered_predictor(workspace, versions.pop())
    keys = sorted(bodies)
    rows = [json.loads(valid[k]) for k in keys]
    for key, row, want in zip(keys, rows, predictor.predict_records(rows)):
        got = bodies[key]
        assert got["prediction"] == want["prediction"]
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-12)
        assert got["id"] == row["customer_id"]
        assert got["model"]["name"] == "churn"
        assert got["input"]["topic"] == "exact-in" and got["input"]["timestamp"] == stamps[key]
        assert got["input"]["offset"] >= 0 and 0 <= got["input"]["partition"] < 3


def test_a_killed_consumer_resumes_without_losing_messages(trained, workspace, kafka_broker):
    spec = stream_spec(workspace, kafka_broker, "restart")
    records = customer_records()
    total = 5_000
    messages = [message(i, records[i % len(records)]) for i in range(total)]
    all_keys = {key for key, _, _ in messages}
    metrics_port = free_port()
    tail = kafka_broker.tail("restart-out", "restart-dead")

    first, log1 = start_stream(workspace, spec, log_name="stream-first.log")
    try:
        wait_started(first, log1)
        # 250 msg/s: 20 s of input, so that it goes on while the second process starts.
        sender = threading.Thread(target=produce, args=(kafka_broker, "restart-in", messages, 250.0))
        sender.start()
        deadline = time.time() + 60
        while len(tail.poll()) < 1_000 and time.time() < deadline:   # a fifth of the way through
            time.sleep(0.05)
        assert len(tail.messages) >= 1_000, f"{len(tail.messages)} outputs in 60 s:\n{log1.read_text()}"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        written_before_kill = {m.key() for m in tail.poll(quiet=1.0)}
        committed_at_kill = kafka_broker.committed("restart-group", "restart-in")
    finally:
        if first.poll() is None:
            first.kill()
    assert len(written_before_kill) < total

    second, log2 = start_stream(workspace, spec, "--metrics-port", str(metrics_port),
                                log_name="stream-second.log")
    try:
        wait_started(second, log2)
        sender.join(60)
        deadline = time.time() + 120
        while not all_keys <= {m.key() for m in tail.poll()} and time.time() < deadline:
            time.sleep(0.2)
        ends = kafka_broker.end_offsets("restart-in")
        while kafka_broker.committed("restart-group", "restart-in") != ends and time.time() < deadline:
            time.sleep(0.2)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        second.send_signal(signal.SIGTERM)   # a clean stop: flush, commit, close
        stdout, _ = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, log2.read_text()
    assert "rayline_stream_latency_seconds_bucket" in metrics

    keys = [m.key() for m in tail.poll(quiet=1.0)]
    tail.close()
    second_run = summary(stdout)
    missing = all_keys - set(keys)
    duplicates = len(keys) - len(set(keys))
    print(f"restart: {len(written_before_kill)} outputs before SIGKILL, {len(keys)} in all, "
          f"{duplicates} duplicates, {len(missing)} missing; second run {second_run}")
    assert not missing, f"{len(missing)} messages lost, e.g. {sorted(missing)[:5]}"
    # Prometheus, read once everything was committed: one latency per prediction of this run.
    assert metric(metrics, "rayline_stream_latency_seconds_count") == second_run["predicted"] > 0
    assert metric(metrics, "rayline_stream_messages_total", 'outcome="invalid"') == second_run["invalid"]

    # At the kill, every input below the committed offsets already had its output (offsets are
    # committed only after outputs are acknowledged); the second run resumed from those offsets,
    # so what it wrote twice is exactly what the first wrote past them.
    position = {(m.partition(), m.offset()): m.key()
                for m in kafka_broker.read_all("restart-in", expect=total)}
    committed_keys = {key for (p, o), key in position.items() if o < committed_at_kill[p]}
    assert committed_keys, f"the first run committed nothing in its {len(written_before_kill)} outputs"
    assert committed_keys <= written_before_kill
    assert second_run["consumed"] == total - len(committed_keys)
    assert duplicates == len(written_before_kill - committed_keys)
    # The clean stop left everything committed: a third run would start at the end.
    assert kafka_broker.committed("restart-group", "restart-in") == ends
