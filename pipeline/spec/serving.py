"""The `serving_options` section: REST on Ray Serve, batch scoring, Kafka streaming. Consumers read
the defaults from these models (`RestServing()`), never re-type them."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, SecretStr, model_validator

from pipeline.spec.base import Duration, Model


class Autoscaling(Model):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(4, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas is above max_replicas")
        return self


class ServingAuth(Model):
    method: Literal["api_key", "bearer"] = "api_key"
    keys: list[SecretStr] = Field(min_length=1)


class RestServing(Model):
    name: Literal["rest_api"]
    framework: Literal["ray_serve", "fastapi"] = "ray_serve"   # fastapi: the same FastAPI ingress on Serve
    # haproxy: Ray 2.60's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY), about twice the default
    # proxy's throughput on a small node; proxy: Serve's Python proxy. Applies to clusters
    # `rayline serve` starts itself; a cluster you start carries its own setting.
    ingress: Literal["haproxy", "proxy"] = "haproxy"
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    autoscaling: Optional[Autoscaling] = None
    auth: Optional[ServingAuth] = None
    max_ongoing_requests: int = Field(32, ge=1)
    max_queued_requests: int = Field(256, ge=-1)
    max_batch_size: int = Field(64, ge=1)
    batch_wait_timeout: Duration = 0.002
    request_timeout: Duration = 30.0
    max_body_bytes: int = Field(10_000_000, ge=1024)
    # Logical CPUs each replica reserves (a scheduling label: it does not cap the threads a
    # replica uses). Serve's default of 1 per replica puts an A/B pair of model deployments
    # plus the ingress past a laptop's CPUs and starves training and Ray Data beside them.
    model_cpus: float = Field(0.5, gt=0)
    ingress_cpus: float = Field(0.25, gt=0)
    # deployments: one Serve deployment per live model version behind the ingress (scaled,
    # placed and restarted apart from HTTP; a GPU model). ingress: the ingress replicas load
    # the versions and score in-process, no actor call per request: several times the single-record
    # requests/s on a small node (benchmarks/serve_rest.py measures both: 3.7x here).
    placement: Literal["deployments", "ingress"] = "deployments"
    containerized: bool = False                 # seed: image-based deploys (cluster/ manifests)
    scaling: Optional[Literal["kubernetes_hpa", "ray_autoscaler"]] = None  # seed wording


class BatchServing(Model):
    name: Literal["batch"]
    input: Optional[str] = None                 # default: the spec's sources
    output: str = "./.rayline/scores"
    format: Literal["parquet", "delta"] = "parquet"
    frequency: Optional[str] = None             # hourly | daily | weekly | a cron expression
    scheduler: Literal["kuberay", "airflow", "cron"] = "kuberay"
    # `rayline score` / `python -m jobs.batch_score` (pipeline/scoring.py):
    input_format: Optional[Literal["parquet", "csv", "json"]] = None   # default: from input's suffix
    model: str = "champion"                     # registry alias or version number to score with
    passthrough: list[str] = []                 # input columns copied to the output beside id_column
    batch_size: Optional[int] = Field(None, ge=1)   # rows per map_batches call; default: a block
    max_actors: Optional[int] = Field(None, ge=1)   # default: the cluster's CPUs less one


class StreamingServing(Model):
    name: Literal["streaming"]
    framework: Literal["kafka"] = "kafka"
    bootstrap_servers: str = "127.0.0.1:9092"
    input_topic: str = "requests"
    output_topic: str = "predictions"
    dead_letter_topic: Optional[str] = None
    group_id: Optional[str] = None
    latency_target: Duration = 0.1
    max_batch_size: int = Field(256, ge=1)
    # `rayline stream` (serve/stream.py):
    model: str = "champion"                     # registry alias or version number to score with
    # Read the input partitions directly instead of joining group_id (offsets are still committed
    # to group_id, so a restart resumes). One consumer per partition set; no rebalancing.
    assign: bool = False
    partitions: Optional[list[Annotated[int, Field(ge=0)]]] = None   # these only (implies assign)
    max_batch_wait: Duration = 0.0              # after a batch's first message, wait for more
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"    # a group with no offsets yet
    consumer_config: dict[str, Union[bool, int, float, str]] = {}   # librdkafka settings
    producer_config: dict[str, Union[bool, int, float, str]] = {}   # (security.protocol, ...)
    metrics_port: Optional[int] = Field(None, ge=1, le=65535)       # Prometheus /metrics


ServingOption = Annotated[Union[RestServing, BatchServing, StreamingServing], Field(discriminator="name")]
SERVING_MODELS = {"rest_api": RestServing, "batch": BatchServing, "streaming": StreamingServing}


def check(spec) -> list[tuple[tuple, str]]:
    problems: list[tuple[tuple, str]] = []
    seen_kinds: set[str] = set()
    for i, option in enumerate(spec.serving_options):
        if option.name in seen_kinds:
            problems.append((("serving_options", i, "name"), f"{option.name} is listed twice"))
        seen_kinds.add(option.name)
    return problems
