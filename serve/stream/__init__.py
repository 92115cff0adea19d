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

Modules: `options` (settings, the model, the message check), `measure` (latency, counts,
Prometheus), `scorer` (the loop); `stream_forever` here runs them.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Optional

from pipeline.spec import Spec
from serve.stream.measure import LATENCY_BUCKETS, LatencyRecorder, Metrics, StreamStats
from serve.stream.options import (
    LoadedModel, RecordValidator, StreamError, StreamOptions, load_model,
)
from serve.stream.scorer import StreamScorer

__all__ = ["LATENCY_BUCKETS", "LatencyRecorder", "LoadedModel", "Metrics", "RecordValidator",
           "StreamError", "StreamOptions", "StreamScorer", "StreamStats", "load_model",
           "stream_forever"]


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
