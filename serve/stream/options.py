"""What a stream reads, writes and scores with: its options (the spec's streaming entry and the
CLI's overrides, as librdkafka settings), the registered model, and the message check."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional


from pipeline.errors import RaylineError
from pipeline.spec import Spec, StreamingServing


class StreamError(RaylineError, RuntimeError):
    """The stream cannot start or go on (no streaming section, a broker error, an output the
    broker did not acknowledge). Offsets of unacknowledged outputs are never committed."""

    exit_code = 2
    title = "stream failed"


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
