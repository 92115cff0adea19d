"""What a stream measures: end-to-end latency in constant memory, the counts, and the Prometheus
metrics served on --metrics-port."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np



LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                   0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


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
