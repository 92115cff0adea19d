"""serve.stream without a broker: options from the spec, the record rules, the latency summary, and
the delivery order (a batch's offsets are committed only once all its outputs are acknowledged,
batches in order, commits paced; nothing from the first batch not acknowledged on), and the
`rayline stream` refusals that come before any connection. The Kafka clients and the model are
stand-ins here (the client protocol only); tests/integration/test_stream.py runs the real broker,
model and CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from pipeline.predictor import FieldSpec, InputSchema
from pipeline.spec import parse_spec
from serve.stream import LatencyRecorder, LoadedModel, RecordValidator, StreamError, StreamOptions, StreamScorer

SPEC = """\
name: churn
sources:
  - {type: files, path: data/x.csv}
target: churned
problem_type: classification
serving_options:
  - name: streaming
    bootstrap_servers: 127.0.0.1:9092
    input_topic: requests
    output_topic: predictions
    max_batch_wait: 2ms
    consumer_config: {fetch.wait.max.ms: 10, check.crcs: true}
"""

SCHEMA = InputSchema([
    FieldSpec("tenure_months", "numeric", nullable=False, minimum=0, maximum=100),
    FieldSpec("contract", "categorical", nullable=False, values=["month-to-month", "one_year"]),
    FieldSpec("total_charges", "numeric"),
])
GOOD = {"tenure_months": 3, "contract": "one_year", "total_charges": None, "customer_id": "C1"}


def test_options_come_from_the_spec_with_defaults_and_overrides():
    spec = parse_spec(SPEC, "spec.yaml")
    options = StreamOptions.from_spec(spec)
    assert options.group_id == "rayline-churn"
    assert options.dead_letter_topic == "requests-dead-letter"
    assert options.max_batch_wait == pytest.approx(0.002)
    assert options.assign is False and options.model == "champion"
    settings = options.consumer_settings()
    assert settings["enable.auto.commit"] is False and settings["fetch.wait.max.ms"] == 10
    assert settings["check.crcs"] is True
    overridden = StreamOptions.from_spec(spec, model="3", partitions=[0, 2], assign=None)
    assert overridden.model == "3" and overridden.partitions == [0, 2] and overridden.assign is True


def test_a_spec_without_a_streaming_option_is_refused():
    spec = parse_spec(SPEC.split("serving_options")[0], "spec.yaml")
    with pytest.raises(StreamError, match="streaming"):
        StreamOptions.from_spec(spec)


@pytest.mark.parametrize("value, field, kind", [
    (dict(GOOD, tenure_months="three"), "tenure_months", None),
    ({k: v for k, v in GOOD.items() if k != "contract"}, "contract", "missing"),
    (dict(GOOD, tenure_months=101), "tenure_months", "less_than_equal"),
    (dict(GOOD, contract="weekly"), "contract", "literal_error"),
    (dict(GOOD, tenure_months=None), "tenure_months", None),
])
def test_invalid_records_name_the_field(value, field, kind):
    row, errors = RecordValidator(SCHEMA, "churn").check(json.dumps(value).encode())
    assert row is None
    assert errors[0]["field"] == field
    if kind:
        assert errors[0]["type"] == kind


@pytest.mark.parametrize("raw, kind", [(b'{"tenure', "json_invalid"), (b"[1, 2]", "not_an_object"),
                                       (None, "missing_value"), (b"\xff\xfe", "json_invalid")])
def test_messages_that_are_not_records(raw, kind):
    row, errors = RecordValidator(SCHEMA, "churn").check(raw)
    assert row is None and errors[0]["type"] == kind and errors[0]["field"] is None


def test_a_valid_record_keeps_its_extra_keys():
    row, errors = RecordValidator(SCHEMA, "churn").check(json.dumps(GOOD).encode())
    assert errors is None and row["customer_id"] == "C1" and row["tenure_months"] == 3


def test_latency_quantiles_are_within_one_percent():
    values = np.random.default_rng(1).lognormal(-4, 1, 20_000)
    recorder = LatencyRecorder()
    recorder.observe_many(list(values))
    for q in (0.5, 0.99):
        assert recorder.quantile(q) == pytest.approx(np.quantile(values, q), rel=0.011)
    assert LatencyRecorder().quantile(0.5) is None


# --------------------------------------------------------------------------- one micro-batch

class Message:
    def __init__(self, offset, value, key=b"k", partition=0):
        self._offset, self._value, self._key, self._partition = offset, value, key, partition

    def error(self): return None
    def key(self): return self._key
    def value(self): return self._value
    def topic(self): return "requests"
    def partition(self): return self._partition
    def offset(self): return self._offset
    def timestamp(self): return (1, 1_700_000_000_000)


class Delivered:
    def __init__(self, topic):
        self._topic = topic

    def topic(self): return self._topic
    def latency(self): return 0.004


class Producer:
    """The producer protocol: produce() queues, the broker acknowledges on poll()/flush() unless
    `hold` keeps it silent; keys in `fail` are refused. `acknowledge(keys)` answers some only."""

    def __init__(self, fail=(), hold=False):
        self.sent, self.pending, self.fail, self.hold, self.events = [], [], set(fail), hold, []

    def produce(self, topic, key=None, value=None, on_delivery=None):
        self.sent.append((topic, key, json.loads(value)))
        self.pending.append((on_delivery, topic, key))

    def acknowledge(self, keys=None):
        self.events.append("acknowledged")
        answered = [p for p in self.pending if keys is None or p[2] in keys]
        self.pending = [p for p in self.pending if p not in answered]
        for callback, topic, key in answered:
            callback("broker said no" if key in self.fail else None, Delivered(topic))

    def poll(self, timeout=0):
        if not self.hold:
            self.acknowledge()
        return 0

    def flush(self, timeout=0):
        self.poll()
        return len(self.pending)


class Consumer:
    def __init__(self, producer):
        self.producer, self.commits, self.closed = producer, [], False

    def commit(self, offsets, asynchronous):
        self.producer.events.append("commit")
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def close(self):
        self.closed = True


class Model:
    schema = SCHEMA

    def predict_records(self, rows):
        return [{"prediction": 1, "probabilities": {"0": 0.25, "1": 0.75}} for _ in rows]


def scorer(fail=(), hold=False) -> StreamScorer:
    options = StreamOptions(bootstrap_servers="x", input_topic="requests", output_topic="out",
                            dead_letter_topic="dead", group_id="g")
    info = {"name": "churn", "version": "4", "family": "xgboost", "run_id": "r", "id_column": "customer_id"}
    s = StreamScorer(options, LoadedModel(Model(), info))
    s.producer = Producer(fail, hold)
    s.consumer = Consumer(s.producer)
    return s


def test_a_batch_is_committed_once_its_outputs_are_acknowledged():
    s = scorer()
    s._handle([Message(7, json.dumps(GOOD).encode(), key=b"a", partition=1),
               Message(8, b"{oops", key=b"b", partition=1),
               Message(3, json.dumps(GOOD).encode(), key=b"c", partition=2)])
    s._settle()
    assert s.consumer.commits == []                   # produced, not acknowledged yet
    s._handle([Message(9, json.dumps(GOOD).encode(), key=b"d", partition=1)])
    s.producer.poll(0)
    s._settle()
    assert s.producer.events == ["acknowledged", "commit"]
    assert s.consumer.commits == [{("requests", 1): 10, ("requests", 2): 4}]
    out = [m for m in s.producer.sent if m[0] == "out"]
    dead = [m for m in s.producer.sent if m[0] == "dead"]
    assert [m[1] for m in out] == [b"a", b"c", b"d"] and [m[1] for m in dead] == [b"b"]
    body = out[0][2]
    assert body["prediction"] == 1 and body["id"] == "C1" and body["model"] == {"name": "churn", "version": "4"}
    assert body["input"] == {"topic": "requests", "partition": 1, "offset": 7, "timestamp": 1_700_000_000_000}
    assert dead[0][2]["value"] == "{oops" and dead[0][2]["errors"][0]["type"] == "json_invalid"
    assert (s.stats.consumed, s.stats.predicted, s.stats.invalid) == (4, 3, 1)
    assert s.stats.latency.count == 3


def test_nothing_is_committed_from_a_batch_whose_output_failed():
    s = scorer(fail={b"k"})
    s._handle([Message(0, json.dumps(GOOD).encode())])
    s.producer.poll(0)
    with pytest.raises(StreamError, match="not committed"):
        s._settle()
    s._settle(commit=False, strict=False)
    assert s.consumer.commits == [] and s._done == {}


def test_batches_are_committed_in_order_whatever_order_their_acknowledgements_come_in():
    s = scorer(hold=True)
    s._handle([Message(0, json.dumps(GOOD).encode(), key=b"a")])
    s._handle([Message(1, b"{oops", key=b"b")])
    s.producer.acknowledge({b"b"})                 # the later batch first
    s._settle()
    assert s.consumer.commits == [] and s._done == {}
    s.producer.acknowledge({b"a"})
    s._settle()
    assert s.consumer.commits == [{("requests", 0): 2}]


@pytest.mark.parametrize("trouble", ["never acknowledged", "refused"])
def test_close_commits_only_up_to_the_first_batch_not_acknowledged(trouble):
    """SIGTERM with outputs in flight: close() waits (flush), then commits the batches before the
    first one whose outputs did not all make it; the rest are read again on restart."""
    s = scorer(fail={b"b"} if trouble == "refused" else (), hold=True)
    s._handle([Message(4, json.dumps(GOOD).encode(), key=b"a")])
    s._handle([Message(5, json.dumps(GOOD).encode(), key=b"b"),
               Message(6, b"{oops", key=b"c")])
    s._handle([Message(7, json.dumps(GOOD).encode(), key=b"d")])
    s.producer.acknowledge({b"a", b"c", b"d"} | ({b"b"} if trouble == "refused" else set()))
    s.close()                                      # flush() gets no answer for what is held
    assert s.consumer.commits == [{("requests", 0): 5}] and s.consumer.closed
    assert s.stats.latency.count == 1             # only the committed batch's prediction


def test_commits_are_paced_and_acknowledged_progress_is_committed_when_the_stream_goes_quiet():
    s = scorer()
    s.COMMIT_INTERVAL = 0.05
    s._handle([Message(0, json.dumps(GOOD).encode())])
    s.producer.poll(0)
    s._settle()
    s._handle([Message(1, json.dumps(GOOD).encode())])
    s.producer.poll(0)
    s._settle()                                    # acknowledged, but within the interval
    assert s.consumer.commits == [{("requests", 0): 1}]
    time.sleep(0.06)
    s._settle()                                    # no new message: the loop's next turn
    s._settle()
    assert s.consumer.commits == [{("requests", 0): 1}, {("requests", 0): 2}]


@pytest.mark.parametrize("spec_text, args, message", [
    (SPEC.split("serving_options")[0], [], "nothing to stream"),
    (SPEC, ["--partitions", "0,two"], "bad --partitions"),
])
def test_rayline_stream_refuses_before_connecting(tmp_path, spec_text, args, message):
    from typer.testing import CliRunner

    from rayline.cli import app

    (tmp_path / "spec.yaml").write_text(spec_text)
    result = CliRunner().invoke(app, ["stream", str(tmp_path / "spec.yaml"), *args])
    assert result.exit_code == 1 and message in result.output, result.output
