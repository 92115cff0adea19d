"""The pipeline spec: pydantic v2 models of every section, and `load_spec`, the only YAML reader.

The models accept the seed's own spellings (`[0.001, 0.1, log]`, `control: 50%`,
`latency_p99 > 500ms`, `2_weeks`) and normalise them into plain values, so nothing downstream
re-parses text. Unknown keys and wrong types raise SpecError naming the YAML path and line.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping, Optional, Union

from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError,
    WithJsonSchema, field_validator, model_validator,
)

from pipeline._internal import units
from pipeline._internal.yamlspec import (
    LoadedYaml, SpecLoadError, format_path, line_for, load_yaml, read_spec_text,
)
from pipeline.formula import Formula, FormulaError

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1_score", "auc_roc", "log_loss",
                          "confusion_matrix")
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2_score", "mape")
METRIC_ALIASES = {"f1": "f1_score", "auc": "auc_roc", "roc_auc": "auc_roc", "r2": "r2_score"}
CLASSIFICATION_FAMILIES = ("logistic_regression", "random_forest", "xgboost", "neural_network",
                           "transformer")
REGRESSION_FAMILIES = ("linear_regression", "random_forest", "xgboost", "neural_network",
                       "transformer")
ModelFamily = Literal["logistic_regression", "linear_regression", "random_forest", "xgboost",
                      "neural_network", "transformer"]


class SpecError(ValueError):
    """A spec that cannot run. The message names the file, line and YAML path of each problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --------------------------------------------------------------------------- field types

def _json(schema: dict) -> WithJsonSchema:
    return WithJsonSchema(schema)


Fraction = Annotated[float, BeforeValidator(units.parse_fraction),
                     _json({"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\d+(\.\d+)?%$"}],
                            "description": "a share: 50%, 0.5"})]
Duration = Annotated[float, BeforeValidator(units.parse_duration),
                     _json({"anyOf": [{"type": "number"}, {"type": "string"}],
                            "description": "seconds, or 100ms / 5m / 2h / 2_weeks / hourly / daily"})]


def _metric_name(value: object) -> object:
    return METRIC_ALIASES.get(value, value) if isinstance(value, str) else value


MetricName = Annotated[str, BeforeValidator(_metric_name)]


class Model(BaseModel):
    """Base of every spec section: unknown keys are errors."""
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=False)


class ShortForm:
    """A section the seed also writes in a short form (`authentication: bearer`, a bare list of
    expectations, `latency_p99 > 500ms`): the JSON Schema offers both forms."""
    short_form: ClassVar[dict] = {"type": "string"}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        return {"anyOf": [handler(core_schema), cls.short_form]}


# --------------------------------------------------------------------------- sources

class Join(Model):
    on: Union[str, list[str]]
    how: Literal["left", "inner", "outer", "right"] = "left"

    @property
    def keys(self) -> list[str]:
        return [self.on] if isinstance(self.on, str) else list(self.on)


class Authentication(ShortForm, Model):
    method: Literal["none", "bearer", "api_key", "basic"] = "none"
    token: Optional[SecretStr] = None          # bearer
    key: Optional[SecretStr] = None            # api_key
    header: str = "X-API-Key"                  # api_key: where the key goes
    username: Optional[str] = None             # basic
    password: Optional[SecretStr] = None       # basic

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # The seed writes `authentication: [method]`, i.e. just the method name.
        return {"method": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _credentials_present(self) -> "Authentication":
        needed = {"bearer": ["token"], "api_key": ["key"], "basic": ["username", "password"]}
        missing = [k for k in needed.get(self.method, []) if getattr(self, k) is None]
        if missing:
            raise ValueError(f"method {self.method} needs {', '.join(missing)}")
        return self


class Pagination(Model):
    type: Literal["none", "page", "cursor"] = "none"
    param: str = "page"                        # page: the page-number parameter
    size_param: Optional[str] = None
    size: int = Field(100, ge=1)
    start: int = 1                             # page: first page number
    cursor_param: str = "cursor"               # cursor: the request parameter
    cursor_path: str = "next_cursor"           # cursor: where the next cursor sits in the JSON
    max_pages: int = Field(10_000, ge=1)


class _SourceBase(Model):
    name: Optional[str] = None
    join: Optional[Join] = None


class DatabaseSource(_SourceBase):
    type: Literal["database"]
    connection: SecretStr
    query: Optional[str] = None
    table: Optional[str] = None
    shard_keys: Optional[list[str]] = None

    @model_validator(mode="after")
    def _query_or_table(self) -> "DatabaseSource":
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of query or table")
        return self


class ApiSource(_SourceBase):
    type: Literal["api"]
    endpoint: str
    authentication: Authentication = Authentication()
    records_path: Optional[str] = None
    pagination: Pagination = Pagination()
    params: dict[str, Union[str, int, float, bool]] = {}
    headers: dict[str, str] = {}
    timeout: Duration = 30.0
    retries: int = Field(3, ge=0, le=20)

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("endpoint must be an http:// or https:// URL")
        return value


class StorageOptions(Model):
    """How to reach s3:// or gs:// files; without it, pyarrow's default credential chain applies."""
    endpoint_url: Optional[str] = None         # e.g. http://127.0.0.1:9000 (MinIO, moto, fake GCS)
    region: Optional[str] = None               # s3
    access_key_id: Optional[SecretStr] = None  # s3
    secret_access_key: Optional[SecretStr] = None  # s3
    session_token: Optional[SecretStr] = None  # s3
    project_id: Optional[str] = None           # gs
    anonymous: bool = False

    @model_validator(mode="after")
    def _key_pair(self) -> "StorageOptions":
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        return self


class FilesSource(_SourceBase):
    type: Literal["files"]
    path: str
    format: Optional[Literal["parquet", "csv", "json"]] = None
    storage_options: Optional[StorageOptions] = None

    @model_validator(mode="after")
    def _known_format(self) -> "FilesSource":
        if self.format is None and self.inferred_format() is None:
            raise ValueError(f"cannot tell the format of {self.path!r}; add format: parquet|csv|json")
        return self

    @model_validator(mode="after")
    def _storage_fits_path(self) -> "FilesSource":
        options = self.storage_options
        if options is None:
            return self
        scheme = self.path.split("://", 1)[0].lower() if "://" in self.path else ""
        if scheme not in ("s3", "s3a", "gs", "gcs"):
            raise ValueError("storage_options apply to s3:// and gs:// paths only")
        s3_only = [k for k in ("region", "access_key_id", "secret_access_key", "session_token")
                   if getattr(options, k) is not None]
        if scheme in ("gs", "gcs") and s3_only:
            raise ValueError(f"storage_options {', '.join(s3_only)} apply to s3:// paths only")
        if scheme in ("s3", "s3a") and options.project_id is not None:
            raise ValueError("storage_options project_id applies to gs:// paths only")
        return self

    def inferred_format(self) -> Optional[str]:
        if self.format:
            return self.format
        suffix = self.path.rstrip("/").rsplit(".", 1)[-1].lower()
        return {"parquet": "parquet", "pq": "parquet", "csv": "csv", "json": "json",
                "jsonl": "json", "ndjson": "json"}.get(suffix)


Source = Annotated[Union[DatabaseSource, ApiSource, FilesSource], Field(discriminator="type")]


class FeatureSelection(Model):
    include: Optional[list[str]] = None        # default: every column but target and id_column
    exclude: list[str] = []


# --------------------------------------------------------------------------- validation

class ColumnExpectation(Model):
    column: str
    type: Optional[Literal["numeric", "integer", "categorical", "string", "boolean", "datetime"]] = None
    range: Optional[tuple[Optional[float], Optional[float]]] = None
    nullable: Optional[bool] = None
    values: Optional[list[Union[str, int, float, bool]]] = None
    unique: bool = False
    regex: Optional[str] = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("range")
    @classmethod
    def _ordered(cls, value):
        if value and value[0] is not None and value[1] is not None and value[0] > value[1]:
            raise ValueError(f"range low {value[0]} is above high {value[1]}")
        return value

    def rules(self) -> list[str]:
        return [r for r in ("type", "range", "nullable", "values", "unique", "regex")
                if getattr(self, r) not in (None, False) or (r == "nullable" and self.nullable is False)]


class Expectations(Model):
    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        # The seed's short form: a bare list of column rules.
        schema = handler(core_schema)
        columns = handler.resolve_ref_schema(schema)["properties"]["columns"]
        return {"anyOf": [schema, {"type": "array", "items": columns["items"]}]}

    on_failure: Literal["fail", "quarantine"] = "fail"
    max_bad_fraction: Fraction = 0.0
    min_rows: Optional[int] = Field(None, ge=0)
    max_rows: Optional[int] = Field(None, ge=0)
    columns: list[ColumnExpectation] = []

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        # The seed writes expectations as a bare list of column rules.
        return {"columns": value} if isinstance(value, list) else value


# --------------------------------------------------------------------------- features

TransformMethod = Literal["standard_scaler", "min_max_scaler", "one_hot", "ordinal", "impute",
                          "log", "clip"]
_METHOD_ALIASES = {"imputation": "impute", "imputer": "impute", "onehot": "one_hot",
                   "one_hot_encoder": "one_hot", "minmax_scaler": "min_max_scaler",
                   "ordinal_encoder": "ordinal", "log_transform": "log", "standard": "standard_scaler"}


class DerivedFeature(Model):
    name: str
    formula: str

    @field_validator("formula")
    @classmethod
    def _safe(cls, value: str) -> str:
        try:
            Formula.parse(value)
        except FormulaError as exc:
            raise ValueError(str(exc)) from None
        return value


class Transformation(Model):
    name: str
    columns: Optional[list[str]] = None
    method: Optional[Annotated[TransformMethod, BeforeValidator(
        lambda v: _METHOD_ALIASES.get(v, v) if isinstance(v, str) else v)]] = None
    derived: Optional[list[DerivedFeature]] = None
    strategy: Optional[Literal["mean", "median", "most_frequent", "constant"]] = None  # impute
    fill_value: Optional[Union[float, str]] = None                                    # impute constant
    lower: Optional[float] = None                                                      # clip
    upper: Optional[float] = None                                                      # clip
    categories: Optional[dict[str, list[Union[str, int, float, bool]]]] = None         # ordinal order
    max_categories: Optional[int] = Field(None, ge=1)                                  # one_hot

    @model_validator(mode="after")
    def _one_kind(self) -> "Transformation":
        if self.derived is not None:
            if self.method is not None or self.columns is not None:
                raise ValueError("a transformation has either derived or method+columns, not both")
            return self
        if self.method is None or not self.columns:
            raise ValueError("a transformation needs method and columns (or derived)")
        if self.method == "impute" and self.strategy is None:
            object.__setattr__(self, "strategy", "median")
        if self.strategy == "constant" and self.fill_value is None:
            raise ValueError("strategy constant needs fill_value")
        if self.method == "clip" and self.lower is None and self.upper is None:
            raise ValueError("clip needs lower and/or upper")
        return self


# --------------------------------------------------------------------------- versioning, split

class DataVersioning(Model):
    tool: Literal["delta", "dvc", "lakefs"] = "delta"
    storage: str = "./.rayline/data"
    tracking: list[Literal["raw_data", "processed_data", "feature_store"]] = [
        "raw_data", "processed_data", "feature_store"]

    @field_validator("tool")
    @classmethod
    def _delta_only(cls, value: str) -> str:
        if value != "delta":
            raise ValueError(f"tool {value} is not supported; rayline versions data as Delta "
                             "Lake tables (tool: delta), which need no server")
        return value


class Split(Model):
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    stratify: bool = True

    @field_validator("ratios")
    @classmethod
    def _sum_to_one(cls, value):
        if any(r < 0 for r in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"ratios must be non-negative and sum to 1, got {list(value)}")
        if value[0] == 0 or value[1] == 0:
            raise ValueError("train and validation ratios must be above 0")
        return value


class Scaling(Model):
    num_workers: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = "auto"
    cpus_per_worker: Union[Literal["auto"], Annotated[float, Field(gt=0)]] = "auto"
    use_gpu: bool = False


# --------------------------------------------------------------------------- tuning

class SearchRange(Model):
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "SearchRange":
        if self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SearchChoice(Model):
    values: list[Any] = Field(min_length=1)


def _search_dimension(value: Any) -> Any:
    """`[low, high, log]`, `[low, high, int]`, `[low, high, uniform]` are ranges; any other list
    is a choice; a dict may spell either out ({low, high, log, integer} or {values}).

    The member model is built here, so a bad range reports its own problem once instead of
    pydantic also trying (and reporting) the other member of the union."""
    if isinstance(value, list):
        if len(value) == 3 and isinstance(value[2], str) and value[2] in (
                "log", "int", "uniform", "float", "log_int", "int_log"):
            kind = value[2]
            value = {"low": value[0], "high": value[1], "log": "log" in kind, "integer": "int" in kind}
        else:
            value = {"values": value}
    elif isinstance(value, (int, float, str, bool)):
        value = {"values": [value]}
    if isinstance(value, dict):
        model = SearchChoice if "values" in value else SearchRange
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where + ': ' if where else ''}"
                             f"{first['msg'].removeprefix('Value error, ')}") from None
    return value


SearchDimension = Annotated[Union[SearchRange, SearchChoice], BeforeValidator(_search_dimension),
                            _json({"anyOf": [{"type": "array"}, {"type": "object"}],
                                   "description": "[low, high, log|int|uniform] or a list of choices"})]


class Tuning(Model):
    method: Literal["optuna", "hyperopt", "random"] = "optuna"
    objective: str = "auto"                    # maximize_<metric> | minimize_<metric> | auto
    n_trials: int = Field(20, ge=1)
    max_concurrent_trials: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = "auto"
    models: Optional[list[ModelFamily]] = None
    search_space: dict[str, SearchDimension] = {}
    time_budget: Optional[Duration] = None
    early_stopping: Literal["asha", "none"] = "asha"

    @field_validator("objective")
    @classmethod
    def _objective(cls, value: str) -> str:
        if value != "auto" and not re.match(r"^(maximize|minimize)_[a-z0-9_]+$", value):
            raise ValueError("objective is maximize_<metric> or minimize_<metric>, e.g. maximize_f1")
        return value

    def objective_parts(self, problem_type: str) -> tuple[str, str]:
        """(mode 'max'|'min', metric name)."""
        if self.objective == "auto":
            return ("max", "f1_score") if problem_type == "classification" else ("min", "rmse")
        direction, metric = self.objective.split("_", 1)
        return ("max" if direction == "maximize" else "min"), METRIC_ALIASES.get(metric, metric)


# --------------------------------------------------------------------------- evaluation

class CustomMetric(Model):
    name: str
    cost_matrix: Optional[list[list[float]]] = None
    formula: Optional[str] = None
    direction: Literal["maximize", "minimize", "auto"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(f"custom metric {value!r} needs a definition: "
                             f"{{name: {value}, cost_matrix: [[...]]}} or {{name: {value}, formula: ...}}")
        return value

    @model_validator(mode="after")
    def _one_definition(self) -> "CustomMetric":
        if (self.cost_matrix is None) == (self.formula is None):
            raise ValueError("give exactly one of cost_matrix or formula")
        if self.cost_matrix is not None:
            n = len(self.cost_matrix)
            if n < 2 or any(len(row) != n for row in self.cost_matrix):
                raise ValueError("cost_matrix must be square (rows: actual, columns: predicted)")
        if self.formula is not None:
            try:
                Formula.parse(self.formula, allowed_names=CONFUSION_NAMES + REGRESSION_FORMULA_NAMES)
            except FormulaError as exc:
                raise ValueError(str(exc)) from None
        return self


CONFUSION_NAMES = ("tp", "fp", "tn", "fn", "n", "positives", "negatives")
REGRESSION_FORMULA_NAMES = ("n", "mse", "rmse", "mae", "r2_score", "mape", "mean_true", "mean_pred")


class Evaluation(Model):
    classification: list[MetricName] = ["accuracy", "precision", "recall", "f1_score", "auc_roc",
                                        "confusion_matrix"]
    regression: list[MetricName] = ["mse", "rmse", "mae", "r2_score"]
    custom: list[CustomMetric] = []
    slices: list[str] = []
    thresholds: dict[Annotated[str, BeforeValidator(_metric_name)], float] = {}

    @field_validator("classification")
    @classmethod
    def _known_classification(cls, value: list[str]) -> list[str]:
        return _known(value, CLASSIFICATION_METRICS)

    @field_validator("regression")
    @classmethod
    def _known_regression(cls, value: list[str]) -> list[str]:
        return _known(value, REGRESSION_METRICS)


def _known(value: list[str], allowed: tuple[str, ...]) -> list[str]:
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
    return value


class Tracking(Model):
    uri: str = "sqlite:///.rayline/mlflow.db"
    experiment: Optional[str] = None
    artifact_location: Optional[str] = None


# --------------------------------------------------------------------------- serving

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


# --------------------------------------------------------------------------- monitoring, A/B, rollback

class Alerts(ShortForm, Model):
    webhook: Optional[SecretStr] = None
    channel: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # The seed writes `alerts: slack`: a channel whose webhook is given later.
        return {"channel": value} if isinstance(value, str) else value


class DataDrift(Model):
    tool: Literal["evidently"] = "evidently"
    frequency: Duration = 3600.0
    threshold: float = Field(0.3, ge=0, le=1)
    alerts: Optional[Alerts] = None


class ModelPerformance(Model):
    metrics: list[str] = ["accuracy", "latency"]
    baseline: Literal["training_metrics"] = "training_metrics"
    threshold: Fraction = 0.05


class Infrastructure(Model):
    tool: Literal["prometheus"] = "prometheus"
    dashboards: Optional[Literal["grafana"]] = "grafana"


class Monitoring(Model):
    data_drift: Optional[DataDrift] = None
    model_performance: Optional[ModelPerformance] = None
    infrastructure: Optional[Infrastructure] = None


class TrafficSplit(Model):
    control: Fraction = 1.0
    treatment: Fraction = 0.0

    @model_validator(mode="after")
    def _sums(self) -> "TrafficSplit":
        if abs(self.control + self.treatment - 1.0) > 1e-6:
            raise ValueError(f"control and treatment must add up to 100%, got "
                             f"{self.control:.0%} + {self.treatment:.0%}")
        return self


class ABTesting(Model):
    framework: Literal["ray_serve"] = "ray_serve"
    mode: Literal["split", "shadow"] = "split"
    traffic_split: TrafficSplit = TrafficSplit(control=0.5, treatment=0.5)
    assignment_key: Optional[str] = None
    success_metrics: list[str] = ["conversion_rate"]
    duration: Optional[Duration] = None
    significance: float = Field(0.95, gt=0, lt=1)

    @field_validator("framework", mode="before")
    @classmethod
    def _framework(cls, value: Any) -> Any:
        if value != "ray_serve":
            raise ValueError(f"framework {value} is not supported: A/B testing is built into the "
                             "Ray Serve app (framework: ray_serve, or leave it out)")
        return value


_TRIGGER_RE = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(>=|<=|>|<)\s*(\S+)\s*$")


class Trigger(ShortForm, Model):
    short_form: ClassVar[dict] = {"type": "string", "pattern": r"^\s*[a-z_][a-z0-9_]*\s*(>=|<=|>|<)\s*\S+\s*$"}

    metric: str
    op: Literal[">", ">=", "<", "<="]
    threshold: float
    text: str

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _TRIGGER_RE.match(value)
        if not match:
            raise ValueError(f"a trigger reads like `error_rate > 5%` or `latency_p99 > 500ms`, got {value!r}")
        threshold, _ = units.parse_quantity(match.group(3))
        return {"metric": match.group(1), "op": match.group(2), "threshold": threshold, "text": value}

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        known = ("error_rate", "latency_p50", "latency_p95", "latency_p99", "data_drift_score",
                 "accuracy_drop", "prediction_drift")
        if value not in known:
            raise ValueError(f"unknown trigger metric {value!r}; known: {', '.join(known)}")
        return value


RollbackStep = Literal["automatic_rollback_to_previous", "alert_on_call", "preserve_logs_for_analysis"]


def _procedure(value: Any) -> Any:
    # The seed writes the procedure as one numbered string: "1. a 2. b 3. c".
    if isinstance(value, str):
        return [s for s in re.split(r"\s*\d+\.\s*", value) if s.strip()]
    return value


class Rollback(Model):
    triggers: list[Trigger] = []
    window: Duration = 300.0
    procedure: Annotated[list[RollbackStep], BeforeValidator(_procedure), _json({
        "anyOf": [{"type": "array", "items": {"enum": list(RollbackStep.__args__)}},
                  {"type": "string", "description": "1. step 2. step ..."}]})] = [
        "automatic_rollback_to_previous", "alert_on_call", "preserve_logs_for_analysis"]


class ModelCard(Model):
    developer: Optional[str] = None
    version: Optional[str] = None
    intended_use: Optional[str] = None
    out_of_scope: Optional[str] = None
    sensitive_features: list[str] = []
    limitations: list[str] = []
    ethical_considerations: Optional[str] = None


# --------------------------------------------------------------------------- the spec

class Spec(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    description: str = ""
    seed: int = 42
    sources: list[Source] = Field(min_length=1)
    target: str
    problem_type: Literal["classification", "regression"]
    id_column: Optional[str] = None
    features: FeatureSelection = FeatureSelection()
    expectations: Expectations = Expectations()
    transformations: list[Transformation] = []
    data_versioning: DataVersioning = DataVersioning()
    split: Split = Split()
    baseline_models: list[ModelFamily] = ["logistic_regression", "xgboost"]
    advanced_models: list[ModelFamily] = []
    selection_criteria: list[str] = ["auto"]
    model_params: dict[ModelFamily, dict[str, Any]] = {}
    scaling: Scaling = Scaling()
    tuning: Optional[Tuning] = None
    evaluation: Evaluation = Evaluation()
    tracking: Tracking = Tracking()
    serving_options: list[ServingOption] = []
    monitoring: Monitoring = Monitoring()
    ab_testing: Optional[ABTesting] = None
    rollback: Optional[Rollback] = None
    model_card: ModelCard = ModelCard()

    _origin: Optional[LoadedYaml] = PrivateAttr(default=None)
    _filename: str = PrivateAttr(default="<spec>")

    # ---- derived views: everything downstream reads these, never the YAML

    @property
    def model_families(self) -> list[str]:
        seen: list[str] = []
        for family in [*self.baseline_models, *self.advanced_models]:
            if family not in seen:
                seen.append(family)
        return seen

    @property
    def metric_names(self) -> list[str]:
        if self.problem_type == "classification":
            return [m for m in self.evaluation.classification]
        return [m for m in self.evaluation.regression]

    @property
    def primary_metric(self) -> tuple[str, str]:
        """(metric, 'max'|'min') that ranks models: the first metric in selection_criteria."""
        for criterion in self.selection_criteria:
            name = _metric_name(criterion)
            if name in ("auto", "inference_latency", "interpretability") or LATENCY_BUDGET_RE.match(criterion):
                continue
            return name, ("min" if name in ("mse", "rmse", "mae", "mape", "log_loss") else "max")
        return ("f1_score", "max") if self.problem_type == "classification" else ("rmse", "min")

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def serving(self, kind: str):
        return next((s for s in self.serving_options if s.name == kind), None)

    @property
    def filename(self) -> str:
        return self._filename

    def where(self, *path: Any) -> str:
        """`spec.yaml:12` for a YAML path, for errors found after loading (e.g. a missing column)."""
        if self._origin is None:
            return f"{self._filename}"
        line = self._origin.lines.get(tuple(path))
        while line is None and path:
            path = path[:-1]
            line = self._origin.lines.get(tuple(path))
        return f"{self._filename}:{line or 1}"

    def redacted(self) -> dict:
        """The spec as written, with ${VAR} placeholders instead of their values: safe to log."""
        return self._origin.raw if self._origin else self.model_dump(mode="json")

    def redact(self, text: str) -> str:
        """Replace every environment-supplied value in a string (e.g. a URL with a password)."""
        return _mask(text, self._origin) if self._origin else text


# A latency budget among selection_criteria: `inference_latency < 20ms` (p99 per record),
# `latency_p50 <= 5ms`, `latency_p99 < 20ms`.
LATENCY_BUDGET_RE = re.compile(r"^\s*(inference_latency|latency_p50|latency_p99)\s*(<=|<)\s*(\S+)\s*$")


def cross_checks(spec: Spec) -> list[tuple[tuple, str]]:
    """Rules that span sections, each as (YAML path, message), checked after the models parse."""
    problems: list[tuple[tuple, str]] = []
    if spec.id_column and spec.id_column == spec.target:
        problems.append((("id_column",), "id_column cannot be the target"))
    if spec.target in spec.features.exclude:
        problems.append((("features", "exclude", spec.features.exclude.index(spec.target)),
                         f"features.exclude names the target {spec.target!r}"))
    if spec.features.include and spec.target in spec.features.include:
        problems.append((("features", "include", spec.features.include.index(spec.target)),
                         f"features.include names the target {spec.target!r}"))
    allowed = CLASSIFICATION_FAMILIES if spec.problem_type == "classification" else REGRESSION_FAMILIES
    for section in ("baseline_models", "advanced_models"):
        for i, family in enumerate(getattr(spec, section)):
            if family not in allowed:
                hint = (" (use linear_regression)" if family == "logistic_regression" else
                        " (use logistic_regression)" if family == "linear_regression" else "")
                problems.append(((section, i), f"model family {family} does not fit problem_type "
                                               f"{spec.problem_type}{hint}"))
    if not spec.model_families:
        problems.append((("baseline_models",), "list at least one model in baseline_models or advanced_models"))
    known_metrics = set(spec.metric_names) | {c.name for c in spec.evaluation.custom}
    for metric in spec.evaluation.thresholds:
        if metric not in known_metrics:
            problems.append((("evaluation", "thresholds", metric),
                             f"{metric} is not a metric of this {spec.problem_type} spec "
                             f"(known: {', '.join(sorted(known_metrics))})"))
    for i, criterion in enumerate(spec.selection_criteria):
        budget = LATENCY_BUDGET_RE.match(criterion)
        if budget:
            try:
                units.parse_duration(budget.group(3))
            except ValueError as exc:
                problems.append((("selection_criteria", i), str(exc)))
        elif _metric_name(criterion) not in known_metrics | {"auto", "inference_latency", "interpretability"}:
            problems.append((("selection_criteria", i), f"unknown criterion {criterion!r}; use a metric "
                             "of the spec, inference_latency (optionally with a budget: "
                             "`inference_latency < 20ms`) or interpretability"))
    formula_names = CONFUSION_NAMES if spec.problem_type == "classification" else REGRESSION_FORMULA_NAMES
    for i, metric in enumerate(spec.evaluation.custom):
        if metric.formula is not None:
            try:
                Formula.parse(metric.formula, allowed_names=formula_names)
            except FormulaError as exc:
                problems.append((("evaluation", "custom", i, "formula"), f"{metric.name}: {exc}"))
        if metric.cost_matrix is not None and spec.problem_type == "regression":
            problems.append((("evaluation", "custom", i, "cost_matrix"),
                             f"{metric.name}: a cost_matrix needs a classification spec"))
    seen_sources: set[str] = set()
    for i, source in enumerate(spec.sources):
        if source.name and source.name in seen_sources:
            problems.append((("sources", i, "name"), f"source name {source.name!r} is used twice"))
        seen_sources.add(source.name or "")
    if spec.sources[0].join is not None:
        problems.append((("sources", 0, "join"), "the first source cannot have join: it has nothing to join onto"))
    if spec.tuning and spec.tuning.objective != "auto":
        _, metric = spec.tuning.objective_parts(spec.problem_type)
        if metric not in known_metrics:
            problems.append((("tuning", "objective"), f"{metric} is not a metric of this spec "
                                                      f"(known: {', '.join(sorted(known_metrics))})"))
    seen_kinds: set[str] = set()
    for i, option in enumerate(spec.serving_options):
        if option.name in seen_kinds:
            problems.append((("serving_options", i, "name"), f"{option.name} is listed twice"))
        seen_kinds.add(option.name)
    seen_derived: set[str] = set()
    for i, t in enumerate(spec.transformations):
        for j, d in enumerate(t.derived or []):
            if d.name in seen_derived:
                problems.append((("transformations", i, "derived", j, "name"),
                                 f"derived feature {d.name!r} is defined twice"))
            seen_derived.add(d.name)
    return problems


def load_spec(path: str | os.PathLike, env: Mapping[str, str] | None = None,
              base_dir: str | os.PathLike | None = None) -> Spec:
    """Read, substitute and validate a spec file. Relative local paths are resolved against
    base_dir (default: the current directory), as `rayline` and `ray job submit` run from the
    project root."""
    try:
        text, filename = read_spec_text(path)
        return parse_spec(text, filename, env=env, base_dir=base_dir)
    except SpecLoadError as exc:
        raise SpecError([str(exc)]) from None


def parse_spec(text: str, filename: str = "<spec>", env: Mapping[str, str] | None = None,
               base_dir: str | os.PathLike | None = None) -> Spec:
    try:
        loaded = load_yaml(text, filename, env)
    except SpecLoadError as exc:
        raise SpecError([str(exc)]) from None
    if not isinstance(loaded.data, dict):
        raise SpecError([f"{filename}:1: the spec must be a mapping of sections"])
    data = _resolve_paths(loaded.data, Path(base_dir or os.getcwd()))
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe_errors(exc, loaded, filename)) from None
    spec._origin = loaded
    spec._filename = filename
    problems = cross_checks(spec)
    if problems:
        raise SpecError([_mask(f"{spec.where(*path)}: {format_path(path)}: {message}", loaded)
                         for path, message in problems])
    return spec


def _mask(text: str, loaded: LoadedYaml) -> str:
    """Never echo a value that came from the environment, whichever validator quoted it."""
    for secret in sorted(loaded.secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _resolve_paths(data: dict, base: Path) -> dict:
    """Absolute paths for local files: Ray workers do not share the driver's working directory."""
    import copy

    data = copy.deepcopy(data)

    def local(value: Any) -> Any:
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            return str(base / value)
        return value

    for source in data.get("sources") or []:
        if isinstance(source, dict) and source.get("type") == "files" and "path" in source:
            source["path"] = local(source["path"])
        if isinstance(source, dict) and source.get("type") == "database":
            conn = source.get("connection")
            if isinstance(conn, str) and conn.startswith("sqlite:///") and not conn.startswith("sqlite:////"):
                rel = conn[len("sqlite:///"):]
                if rel and rel != ":memory:":
                    source["connection"] = "sqlite:///" + str(base / rel)
    versioning = data.setdefault("data_versioning", {})
    if isinstance(versioning, dict):
        versioning["storage"] = local(versioning.get("storage", DataVersioning.model_fields["storage"].default))
    tracking = data.setdefault("tracking", {}) if isinstance(data.get("tracking", {}), dict) else None
    if tracking is not None:
        uri = tracking.get("uri", Tracking().uri)
        if isinstance(uri, str) and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            tracking["uri"] = "sqlite:///" + str(base / uri[len("sqlite:///"):])
        if "artifact_location" in tracking:
            tracking["artifact_location"] = local(tracking["artifact_location"])
    for option in data.get("serving_options") or []:
        if isinstance(option, dict) and option.get("name") == "batch":
            option.setdefault("output", BatchServing.model_fields["output"].default)
            for key in ("input", "output"):
                if key in option:
                    option[key] = local(option[key])
    return data


def _describe_errors(exc: ValidationError, loaded: LoadedYaml, filename: str) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for error in exc.errors(include_url=False):
        path, line, found = line_for(loaded.lines, loaded.data, tuple(error["loc"]))
        where = f"{filename}:{line}: {format_path(path)}"
        kind = error["type"]
        if kind == "extra_forbidden":
            key = path[-1] if path else "?"
            hint = _did_you_mean(str(key))
            message = f"{where}: unknown key {key!r}{hint}"
        elif kind == "missing":
            missing = error["loc"][-1]
            message = f"{where}: missing required key {missing!r}"
        else:
            text = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            value = error.get("input")
            shown = "" if isinstance(value, (dict, list)) or kind.startswith(("value_error", "assertion")) \
                else f" (got {_show(loaded, path, value)})"
            message = f"{where}: {text}{shown}"
        message = _mask(message, loaded)
        if message not in seen:
            seen.add(message)
            problems.append(message)
    return problems


def _show(loaded: LoadedYaml, path: tuple, value: Any) -> str:
    raw = _get(loaded.raw, path)
    if isinstance(raw, str) and "${" in raw:
        return repr(raw)  # never echo a substituted secret
    return repr(value)


def _get(tree: Any, path: tuple) -> Any:
    for part in path:
        try:
            tree = tree[part]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def _all_keys() -> set[str]:
    keys: set[str] = set()
    stack: list[type[BaseModel]] = [Spec]
    seen: set[type] = set()
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        keys.update(model.model_fields)
        for sub in Model.__subclasses__() + _SourceBase.__subclasses__():
            stack.append(sub)
    return keys


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, sorted(_all_keys()), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
