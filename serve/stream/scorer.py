"""The loop: consume -> validate -> score -> produce, one micro-batch at a time, offsets committed
in order as each batch's outputs are acknowledged (see the package docstring)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from functools import partial
from typing import Any, Callable, Optional

import numpy as np

from serve.stream.measure import LatencyRecorder, Metrics, StreamStats
from serve.stream.options import LoadedModel, RecordValidator, StreamError, StreamOptions

log = logging.getLogger("rayline.stream")


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
