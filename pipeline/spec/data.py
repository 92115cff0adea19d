"""The data sections: where rows come from (`sources`), which columns are inputs (`features`), the
rules every row must keep (`expectations`), how tables are versioned and how rows are split.
Cross-checks of these sections (the target is not an input, source names are unique, ...) sit
in `check` at the bottom."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, SecretStr, field_validator, model_validator

from pipeline.spec.base import Duration, Fraction, Model, ShortForm


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


class SourceBase(Model):
    name: Optional[str] = None
    join: Optional[Join] = None


class DatabaseSource(SourceBase):
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


class ApiSource(SourceBase):
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


class FilesSource(SourceBase):
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

    def columns(self, available: list[str], target: str, id_column: Optional[str]) -> list[str]:
        """The model's raw input columns, in order, out of the data's columns."""
        if self.include:
            return list(self.include)
        skip = {target, id_column, *self.exclude}
        return [c for c in available if c not in skip]


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


def check(spec) -> list[tuple[tuple, str]]:
    """Rules across the data sections, each as (YAML path, message)."""
    problems: list[tuple[tuple, str]] = []
    if spec.id_column and spec.id_column == spec.target:
        problems.append((("id_column",), "id_column cannot be the target"))
    if spec.target in spec.features.exclude:
        problems.append((("features", "exclude", spec.features.exclude.index(spec.target)),
                         f"features.exclude names the target {spec.target!r}"))
    if spec.features.include and spec.target in spec.features.include:
        problems.append((("features", "include", spec.features.include.index(spec.target)),
                         f"features.include names the target {spec.target!r}"))
    seen_sources: set[str] = set()
    for i, source in enumerate(spec.sources):
        if source.name and source.name in seen_sources:
            problems.append((("sources", i, "name"), f"source name {source.name!r} is used twice"))
        seen_sources.add(source.name or "")
    if spec.sources[0].join is not None:
        problems.append((("sources", 0, "join"), "the first source cannot have join: it has nothing to join onto"))
    return problems
