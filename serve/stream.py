"""`rayline stream`: score JSON records from a Kafka topic with a registered model.

One process, no Ray: a confluent-kafka consumer reads `input_topic`, validates each message
against the model's input schema (the HTTP request model of serve/schemas.py), scores the valid
ones in micro-batches with `Predictor.predict_records`, writes predictions keyed like their input
to `output_topic` and invalid messages, with the error naming the field, to `dead_letter_topic`.

Delivery is at-least-once: offsets are committed (manually, `enable.auto.commit: false`) only
after every output of a batch is acknowledged by the broker. The loop does not wait for the
acknowledgements: it goes on with the next batch, and commits the batches at the head of the
line, in order, as theirs arrive (one commit request every 100 ms at most, covering all of them);
a failed output stops the line (nothing after it is committed) and the stream. A crash
between produce and commit re-scores those batches on restart (duplicates), never drops them.
SIGINT/SIGTERM: finish the batch, wait for its outputs, commit, close.

Latency: a batch starts with the first message `poll` returns and takes what has already
arrived (plus `max_batch_wait`), so under load batches grow by themselves and when idle each
message goes alone. `fetch.wait.max.ms` is 5 because some brokers (tansu) answer a fetch only
when it expires, not when data arrives; against Kafka itself, which answers as soon as data is
there, a larger value (consumer_config) saves requests at no cost in latency. End-to-end
latency (the input message's timestamp -> its prediction acknowledged) is a Prometheus
histogram (`--metrics-port`) and p50/p99 on exit.

Partitions: by default the consumer joins `group_id` (rebalancing between consumers). With
`assign` (or `partitions`) it reads the partitions directly, no join, and still commits its
offsets to `group_id`, so a restart resumes where the last commit left off. tansu needs this:
its group join waits half of `session.timeout.ms`, and a group whose member was killed never
rebalances.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Optional

import numpy as np

from pipeline.errors import RaylineError
from pipeline.spec import Spec, StreamingServing

log = logging.getLogger("rayline.stream")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                   0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class StreamError(RaylineError, RuntimeError):
    """The stream cannot start or go on (no streaming section, a broker error, an output the
    broker did not acknowledge). Offsets of unacknowledged outputs are never committed."""

    exit_code = 2
    title = "stream failed"


# --------------------------------------------------------------------------- configuration

@dataclass
class StreamOptions:
    bootstrap_servers: str
    input_topic: str
    output_topic: str
    dead_letter_topic: str
    group_id: str
    model: str = "champion"
    assign: bool = False
    partitions: Optional[list[int]] = None
    max_batch_size: int = 256
    max_batch_wait: float = 0.0
    latency_target: float = 0.1
    auto_offset_reset: str = "earliest"
    consumer_config: dict[str, Any] = field(default_factory=dict)
    producer_config: dict[str, Any] = field(default_factory=dict)
    metrics_port: Optional[int] = None
    metrics_host: str = "127.0.0.1"

    @classmethod
    def from_spec(cls, spec: Spec, **overrides: Any) -> "StreamOptions":
        """The spec's `serving_options[streaming]`, with the CLI's overrides (None = keep)."""
        option: Optional[StreamingServing] = spec.serving("streaming")
        if option is None:
            raise StreamError(f"{spec.filename}: serving_options has no `name: streaming` entry")
        values = dict(
            bootstrap_servers=option.bootstrap_servers, input_topic=option.input_topic,
            output_topic=option.output_topic,
            dead_letter_topic=option.dead_letter_topic or f"{option.input_topic}-dead-letter",
            group_id=option.group_id or f"rayline-{spec.name}", model=option.model,
            assign=option.assign or option.partitions is not None,
            partitions=list(option.partitions) if option.partitions is not None else None,
            max_batch_size=option.max_batch_size, max_batch_wait=option.max_batch_wait,
            latency_target=option.latency_target, auto_offset_reset=option.auto_offset_reset,
            consumer_config=dict(option.consumer_config), producer_config=dict(option.producer_config),
            metrics_port=option.metrics_port)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("partitions") is not None:
            values["assign"] = True
        return cls(**values)

    def consumer_settings(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, "group.id": self.group_id,
                "client.id": f"{self.group_id}-consumer",
                "enable.auto.commit": False, "enable.auto.offset.store": False,
                "auto.offset.reset": self.auto_offset_reset,
                "fetch.wait.max.ms": 5,          # see the module docstring
                "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
                **self.consumer_config}

    def producer_settings(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, "client.id": f"{self.group_id}-producer",
                # linger 5 (librdkafka's default): measured against 2 with tansu, it costs ~2 ms
                # at 200 msg/s and saves broker CPU (fewer, larger batches) at 1,000 msg/s.
                "acks": "all", "linger.ms": 5, "partitioner": "murmur2_random",  # Java's key hashing
                **self.producer_config}


# --------------------------------------------------------------------------- model and validation

@dataclass
class LoadedModel:
    predictor: Any                   # pipeline.predictor.Predictor
    info: dict[str, Any]             # name, version, family, run_id, id_column


def load_model(spec: Spec, ref: str = "champion") -> LoadedModel:
    """The registered version `ref` (alias or number), downloaded and loaded once."""
    from pipeline import registry

    registry.configure_for(spec)
    loaded = registry.load_predictor(spec.name, ref)
    info = {k: loaded.info[k] for k in ("name", "version", "family", "run_id", "id_column")}
    return LoadedModel(loaded.predictor, info)


class RecordValidator:
    """A message value -> (the record as the model sees it, None) or (None, errors). The rules
    are the HTTP request model's: every input field present, typed, within the spec's range and
    values; other keys (an id) pass through."""

    def __init__(self, schema, model_name: str):
        from serve.schemas import record_model

        self.model = record_model(schema, model_name)
        self.fields = {f.name for f in schema.fields}

    def check(self, value: Optional[bytes]) -> tuple[Optional[dict], Optional[list[dict]]]:
        from pydantic import ValidationError

        if value is None:
            return None, [{"field": None, "type": "missing_value", "msg": "the message has no value"}]
        try:
            record = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            return None, [{"field": None, "type": "json_invalid", "msg": f"not valid JSON: {exc}"}]
        if not isinstance(record, dict):
            return None, [{"field": None, "type": "not_an_object",
                           "msg": f"expected a JSON object, got {type(record).__name__}"}]
        try:
            return self.model.model_validate(record).model_dump(), None
        except ValidationError as exc:
            return None, [self._error(e) for e in exc.errors(include_url=False)]

    def _error(self, error: dict) -> dict:
        loc = list(error.get("loc", ()))
        named = next((part for part in loc if isinstance(part, str) and part in self.fields), None)
        return {"field": named if named is not None else (loc[0] if loc else None),
                "loc": loc, "type": error.get("type"), "msg": error.get("msg")}


# --------------------------------------------------------------------------- measurements

class LatencyRecorder:
    """End-to-end latency (input message timestamp -> output acknowledged by the broker): p50
    and p99 over the whole run, within 1%, from logarithmic bins (0.1 ms to a day) that take
    constant memory however long the stream runs; plus the Prometheus histogram when given."""

    LOW, GROWTH = 1e-4, 1.01
    BINS = int(np.ceil(np.log(86400 / 1e-4) / np.log(1.01))) + 2

    def __init__(self, histogram=None):
        self.bins = np.zeros(self.BINS, dtype=np.int64)
        self.count = 0
        self.histogram = histogram

    def observe_many(self, seconds: list[float]) -> None:
        if not seconds:
            return
        values = np.maximum(np.asarray(seconds, dtype=np.float64), self.LOW)
        idx = np.minimum(np.ceil(np.log(values / self.LOW) / np.log(self.GROWTH)).astype(np.int64),
                         self.BINS - 1)
        np.add.at(self.bins, idx, 1)
        self.count += len(values)
        if self.histogram is not None:
            for v in values:
                self.histogram.observe(v)

    def quantile(self, q: float) -> Optional[float]:
        """Seconds (the upper edge of the bin holding the q-th value), None before any value."""
        if self.count == 0:
            return None
        rank = max(1, int(np.ceil(q * self.count)))
        return self.LOW * self.GROWTH ** int(np.searchsorted(np.cumsum(self.bins), rank))


@dataclass
class StreamStats:
    consumed: int = 0
    predicted: int = 0
    invalid: int = 0
    batches: int = 0
    seconds: float = 0.0
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)

    def as_dict(self) -> dict[str, Any]:
        p50, p99 = self.latency.quantile(0.5), self.latency.quantile(0.99)
        return {"consumed": self.consumed, "predicted": self.predicted, "invalid": self.invalid,
                "batches": self.batches, "seconds": round(self.seconds, 3),
                "p50_ms": None if p50 is None else round(p50 * 1000, 1),
                "p99_ms": None if p99 is None else round(p99 * 1000, 1)}


class Metrics:
    """Prometheus metrics in a registry of their own, served on `port` when given."""

    def __init__(self, info: dict[str, Any], port: Optional[int], host: str):
        from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

        self.registry = CollectorRegistry()
        labels = {"model": info["name"], "version": str(info["version"])}
        self.latency = Histogram("rayline_stream_latency_seconds", "Input message timestamp to "
                                 "prediction acknowledged by the broker", list(labels),
                                 buckets=LATENCY_BUCKETS, registry=self.registry).labels(**labels)
        messages = Counter("rayline_stream_messages", "Input messages handled, by outcome",
                           [*labels, "outcome"], registry=self.registry)
        self.predicted = messages.labels(**labels, outcome="predicted")
        self.invalid = messages.labels(**labels, outcome="invalid")
        self.batch_size = Histogram("rayline_stream_batch_size", "Messages per micro-batch", list(labels),
                                    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
                                    registry=self.registry).labels(**labels)
        self.server = None
        if port:
            self.server, _ = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()


# --------------------------------------------------------------------------- the loop

class _InFlight:
    """One micro-batch whose outputs the broker has not acknowledged yet."""

    __slots__ = ("offsets", "pending", "failed", "latencies")

    def __init__(self, offsets: dict[tuple[str, int], int], pending: int):
        self.offsets = offsets          # (topic, partition) -> next offset, once acknowledged
        self.pending = pending
        self.failed: list[str] = []
        self.latencies: list[float] = []

    def delivered(self, produced_at: float, input_ms: Optional[int], err, msg) -> None:
        self.pending -= 1
        if err is not None:
            self.failed.append(f"{msg.topic()}: {err}")
        elif input_ms is not None:
            # msg.latency(): produce() -> acknowledgement, measured by librdkafka.
            acked = produced_at + (msg.latency() or 0.0)
            self.latencies.append(acked - input_ms / 1000)


class StreamScorer:
    """Consume -> validate -> score -> produce, one micro-batch at a time; offsets are committed
    in order as each batch's outputs are acknowledged (the loop does not wait for them)."""

    MAX_IN_FLIGHT = 50_000              # unacknowledged outputs before the loop waits
    # Acknowledged progress is committed at most this often, and on close / revoke: a commit is
    # a request to the group coordinator, and one per micro-batch would be hundreds a second. A
    # crash re-reads (and re-scores) at most this much more.
    COMMIT_INTERVAL = 0.1

    def __init__(self, options: StreamOptions, model: LoadedModel):
        self.options = options
        self.model = model
        self.validator = RecordValidator(model.predictor.schema, model.info["name"])
        self.id_column = model.info.get("id_column")
        self.model_ref = {"name": model.info["name"], "version": str(model.info["version"])}
        self.metrics = Metrics(model.info, options.metrics_port, options.metrics_host)
        self.stats = StreamStats(latency=LatencyRecorder(self.metrics.latency))
        self.consumer = self.producer = None
        self.partitions: list[int] = []
        self._done: dict[tuple[str, int], int] = {}     # acknowledged: next offset to read
        self._uncommitted = False                       # _done moved since the last commit
        self._last_commit = 0.0                         # time.monotonic() of the last commit
        self._in_flight: deque[_InFlight] = deque()

    @property
    def _unacked(self) -> int:
        return sum(f.pending for f in self._in_flight)

    # ---- set-up and tear-down
    def open(self) -> None:
        from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

        o = self.options
        self.producer = Producer(o.producer_settings())
        self.consumer = Consumer({**o.consumer_settings(), "on_commit": self._committed,
                                  "error_cb": self._kafka_error})
        try:
            if o.assign:
                self.partitions = o.partitions or self._topic_partitions()
                # No offset given: each partition starts at group_id's committed offset, or at
                # auto.offset.reset when the group has none.
                self.consumer.assign([TopicPartition(o.input_topic, p) for p in self.partitions])
            else:
                self.consumer.subscribe([o.input_topic], on_revoke=self._revoked)
        except KafkaException as exc:
            raise StreamError(f"cannot read {o.input_topic} from {o.bootstrap_servers}: {exc}") from exc

    def _topic_partitions(self) -> list[int]:
        o = self.options
        meta = self.consumer.list_topics(o.input_topic, timeout=15)
        topic = meta.topics.get(o.input_topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise StreamError(f"topic {o.input_topic!r} does not exist on {o.bootstrap_servers}"
                              + (f" ({topic.error})" if topic is not None and topic.error else ""))
        return sorted(topic.partitions)

    def close(self) -> None:
        """Wait for the outputs in flight, commit every batch acknowledged in full (in order, up
        to a failed one), leave the group."""
        try:
            if self.producer is not None:
                self.producer.flush(30)
                self._settle(commit=False, strict=False)
            if self.consumer is not None:
                self._commit(asynchronous=False)
        finally:
            if self.consumer is not None:
                self.consumer.close()
            self.metrics.close()

    # ---- callbacks
    def _committed(self, err, partitions) -> None:
        if err is not None:
            log.warning("offset commit failed: %s", err)

    def _kafka_error(self, err) -> None:
        log.warning("kafka: %s", err)

    def _revoked(self, consumer, partitions) -> None:
        # Wait for the outputs of what was read, commit them, and forget the partitions that now
        # belong to another member.
        self.producer.flush(30)
        self._settle(commit=False, strict=False)
        self._commit(asynchronous=False)
        for tp in partitions:
            self._done.pop((tp.topic, tp.partition), None)

    # ---- the loop
    def run(self, stop: threading.Event, max_messages: Optional[int] = None,
            idle_exit: Optional[float] = None,
            on_batch: Optional[Callable[[StreamStats], None]] = None) -> StreamStats:
        o = self.options
        start = last_message = time.monotonic()
        try:
            while not stop.is_set():
                self.producer.poll(0)           # delivery callbacks
                self._settle()
                if max_messages is not None and self.stats.consumed >= max_messages:
                    break
                while self._unacked > self.MAX_IN_FLIGHT:   # the broker is behind: wait for it
                    self.producer.poll(0.05)
                    self._settle()
                first = self.consumer.poll(0.005 if self._in_flight else 0.1)
                if first is None:
                    if idle_exit is not None and time.monotonic() - last_message >= idle_exit:
                        break
                    continue
                room = o.max_batch_size - 1
                if max_messages is not None:
                    room = min(room, max_messages - self.stats.consumed - 1)
                batch = [first] + (self.consumer.consume(room, o.max_batch_wait) if room > 0 else [])
                self._handle(batch)
                last_message = time.monotonic()
                if on_batch is not None:
                    on_batch(self.stats)
        finally:
            self.stats.seconds = time.monotonic() - start
        return self.stats

    def _handle(self, batch: list) -> None:
        from confluent_kafka import KafkaException

        good, rows, bad = [], [], []
        offsets: dict[tuple[str, int], int] = {}
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise StreamError(f"consumer error: {err}")
                log.warning("consumer: %s", err)   # e.g. a topic that does not exist (yet)
                continue
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            row, errors = self.validator.check(msg.value())
            if errors is None:
                good.append(msg)
                rows.append(row)
            else:
                bad.append((msg, errors))
        predictions, rejected = self._score(rows)
        for i in sorted(rejected, reverse=True):
            bad.append((good.pop(i), rejected[i]))
            rows.pop(i)
        flight = _InFlight(offsets, len(good) + len(bad))
        self._in_flight.append(flight)
        now = time.time()
        try:
            for msg, row, prediction in zip(good, rows, predictions):
                self._produce(self.options.output_topic, msg.key(),
                              self._prediction_value(msg, row, prediction),
                              partial(flight.delivered, now, _timestamp_ms(msg)))
            for msg, errors in bad:
                self._produce(self.options.dead_letter_topic, msg.key(),
                              self._dead_letter_value(msg, errors), partial(flight.delivered, now, None))
        except KafkaException as exc:
            raise StreamError(f"cannot produce: {exc}; offsets of this batch not committed") from exc
        self.stats.consumed += len(good) + len(bad)
        self.stats.predicted += len(good)
        self.stats.invalid += len(bad)
        self.stats.batches += 1
        self.metrics.predicted.inc(len(good))
        self.metrics.invalid.inc(len(bad))
        self.metrics.batch_size.observe(len(batch))

    def _produce(self, topic: str, key, value: bytes, on_delivery) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                return
            except BufferError:          # the client's queue is full: let it drain
                self.producer.poll(0.05)

    def _settle(self, commit: bool = True, strict: bool = True) -> None:
        """Commit the batches at the head of the line whose outputs are all acknowledged; a
        failed output stops the line there (raised when `strict`), so nothing after it is
        committed."""
        while self._in_flight and self._in_flight[0].pending == 0:
            flight = self._in_flight[0]
            if flight.failed:
                if strict:
                    raise StreamError(f"{len(flight.failed)} outputs not acknowledged "
                                      f"({'; '.join(flight.failed[:3])}): offsets from this batch on "
                                      f"not committed")
                break
            self._in_flight.popleft()
            self._done.update(flight.offsets)
            self.stats.latency.observe_many(flight.latencies)
            self._uncommitted = True
        if commit and self._uncommitted and time.monotonic() - self._last_commit >= self.COMMIT_INTERVAL:
            self._commit(asynchronous=True)

    def _score(self, rows: list[dict]) -> tuple[list[dict], dict[int, list[dict]]]:
        """Predictions for the batch; a record the model still cannot score (it passed the
        schema) goes to the dead-letter topic alone instead of failing the batch."""
        if not rows:
            return [], {}
        predict = self.model.predictor.predict_records
        try:
            return predict(rows), {}
        except Exception:  # noqa: BLE001 - find the record(s) responsible, one by one
            predictions, rejected = [], {}
            for i, row in enumerate(rows):
                try:
                    predictions.append(predict([row])[0])
                except Exception as exc:  # noqa: BLE001
                    rejected[i] = [{"field": None, "type": "prediction_error",
                                    "msg": f"{type(exc).__name__}: {exc}"}]
            return predictions, rejected

    def _prediction_value(self, msg, row: dict, prediction: dict) -> bytes:
        out = dict(prediction)
        if self.id_column and row.get(self.id_column) is not None:
            out["id"] = row[self.id_column]
        out["model"] = self.model_ref
        out["input"] = _position(msg)
        return json.dumps(out, separators=(",", ":"), default=_json_default).encode()

    def _dead_letter_value(self, msg, errors: list[dict]) -> bytes:
        value = msg.value()
        out: dict[str, Any] = {
            "error": "; ".join(f"{e['field']}: {e['msg']}" if e.get("field") else e["msg"] for e in errors),
            "errors": errors, "input": _position(msg), "model": self.model_ref}
        if value is not None:
            try:
                out["value"] = value.decode("utf-8")
            except UnicodeDecodeError:
                import base64

                out["value_base64"] = base64.b64encode(value).decode()
        return json.dumps(out, separators=(",", ":"), default=_json_default).encode()

    def _commit(self, asynchronous: bool) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        if not self._done:
            return
        self._uncommitted, self._last_commit = False, time.monotonic()
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._done.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            log.warning("offset commit failed (the messages will be read again): %s", exc)


def _timestamp_ms(msg) -> Optional[int]:
    kind, ms = msg.timestamp()
    return ms if kind != 0 and ms > 0 else None   # 0: TIMESTAMP_NOT_AVAILABLE


def _position(msg) -> dict[str, Any]:
    return {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
            "timestamp": _timestamp_ms(msg)}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------- `rayline stream`

def stream_forever(spec: Spec, console, model_ref: Optional[str] = None,
                   max_messages: Optional[int] = None, idle_exit: Optional[float] = None,
                   **overrides: Any) -> StreamStats:
    """Load the model once, consume until SIGINT/SIGTERM (or max_messages / idle_exit), then
    flush, commit, close and return the counts and latency."""
    options = StreamOptions.from_spec(spec, model=model_ref, **overrides)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        started = time.perf_counter()
        model = load_model(spec, options.model)
        scorer = StreamScorer(options, model)
        scorer.open()
        try:
            mode = (f"partitions {','.join(map(str, scorer.partitions))} assigned"
                    if options.assign else "subscribed")
            console.print(
                f"[green]✓[/] streaming [bold]{spec.name}[/] v{model.info['version']} "
                f"({model.info['family']}): {options.input_topic} ({mode}, group {options.group_id}) "
                f"-> {options.output_topic}, invalid -> {options.dead_letter_topic} "
                f"[dim]({time.perf_counter() - started:.1f} s)[/]", soft_wrap=True)
            if options.metrics_port:
                console.print(f"  metrics at http://{options.metrics_host}:{options.metrics_port}/metrics")
            stats = scorer.run(stop, max_messages=max_messages, idle_exit=idle_exit)
        finally:
            scorer.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = stats.as_dict()
    target_ms = options.latency_target * 1000
    verdict = ("" if summary["p99_ms"] is None else
               f" (target {target_ms:.0f} ms: {'met' if summary['p99_ms'] <= target_ms else 'missed'})")
    console.print(f"stopped: {stats.consumed:,} messages, {stats.predicted:,} predicted, "
                  f"{stats.invalid:,} to {options.dead_letter_topic}; latency p50 "
                  f"{summary['p50_ms']} ms, p99 {summary['p99_ms']} ms{verdict}", soft_wrap=True)
    return stats
