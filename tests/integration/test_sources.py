"""Every source kind through the real entry point, `rayline run SPEC`, on the shared Ray cluster,
against real services: SQLite, a PostgreSQL server, a local HTTP JSON API, S3 on moto, and a
database source joined with an API source."""

from __future__ import annotations

import io
import re
import sqlite3
import textwrap

import pandas as pd
import pytest

from tests.integration.conftest import EXAMPLE, Workspace
from tests.integration.services import (  # noqa: F401 (fixtures)
    ApiServer, MotoS3, Postgres, api_server, moto_s3, postgres,
)

pytestmark = pytest.mark.integration

CUSTOMERS = EXAMPLE / "data" / "customers.csv"

SPEC = """\
name: {name}
sources:
{sources}
target: churned
problem_type: classification
id_column: customer_id
features:
  include: [tenure_months, monthly_charges, contract, num_support_calls{extra}]
expectations:
  columns:
    - {{column: tenure_months, type: numeric, range: [0, 100], nullable: false}}
    - {{column: churned, type: categorical, values: [0, 1], nullable: false}}
transformations:
  - {{name: normalize_numeric, columns: [tenure_months, monthly_charges], method: standard_scaler}}
  - {{name: encode_categorical, columns: [contract], method: one_hot}}
baseline_models: [logistic_regression]
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory, cluster, api_server, moto_s3, postgres) -> Workspace:  # noqa: F811
    path = tmp_path_factory.mktemp("sources")
    (path / "data").mkdir()
    with sqlite3.connect(path / "data" / "crm.db") as conn:
        pd.read_csv(CUSTOMERS).to_sql("customers", conn, index=False)
    env = {**cluster.env, "PYTHONUNBUFFERED": "1",
           "USAGE_API_TOKEN": api_server.token, "PG_PASSWORD": postgres.password,
           "S3_ACCESS_KEY": moto_s3.access_key_id, "S3_SECRET_KEY": moto_s3.secret_access_key}
    return Workspace(path=path, spec=path / "spec.yaml", env=env)


def run(ws: Workspace, name: str, sources: str, extra_features: str = ""):
    spec = ws.path / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, sources=textwrap.indent(textwrap.dedent(sources), "  "),
                                extra=extra_features))
    result = ws.rayline("run", spec.name)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"rayline run {spec.name} failed:\n{output}"
    return output


def ingested(output: str) -> tuple[int, int, int]:
    """(rows, columns, sources) from the `✓ Ingest  5,000 rows x 12 columns from 1 source(s)` line."""
    found = re.search(r"✓ Ingest\s+([\d,]+) rows x (\d+) columns\s+from (\d+) source", output)
    assert found, output
    return int(found[1].replace(",", "")), int(found[2]), int(found[3])


def assert_registered(ws: Workspace, name: str) -> None:
    import mlflow

    uri = f"sqlite:///{ws.path / '.rayline' / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias(name, "champion")
    assert str(version.version) == "1"
    run = client.get_run(version.run_id)
    assert run.data.metrics["data_rows"] == 5000


def test_database_source_on_sqlite(ws):
    output = run(ws, "src_sqlite", """\
        - name: customers
          type: database
          connection: sqlite:///data/crm.db
          query: SELECT * FROM customers WHERE tenure_months >= 0;
        """)
    assert ingested(output) == (5000, 12, 1)
    assert_registered(ws, "src_sqlite")


def test_database_source_on_postgresql_with_shard_keys(ws, postgres):  # noqa: F811
    output = run(ws, "src_postgres", f"""\
        - name: customers
          type: database
          connection: postgresql://{postgres.user}:${{PG_PASSWORD}}@127.0.0.1:{postgres.port}/{postgres.database}
          table: customers
          shard_keys: [customer_id]
        """)
    assert ingested(output) == (5000, 12, 1)
    assert postgres.password not in output
    assert_registered(ws, "src_postgres")


def test_api_source_with_bearer_token_page_pagination_and_retries(ws, api_server):  # noqa: F811
    api_server.reset()
    api_server.fail_next(429, {"Retry-After": "1"})
    api_server.fail_next(503)
    output = run(ws, "src_api", f"""\
        - name: customers
          type: api
          endpoint: {api_server.url}/v1/customers
          authentication: {{method: bearer, token: "${{USAGE_API_TOKEN}}"}}
          records_path: data
          pagination: {{type: page, param: page, size_param: per_page, size: 1000}}
          retries: 3
        """)
    assert ingested(output) == (5000, 12, 1)
    assert api_server.token not in output
    pages = [s.query.get("page") for s in api_server.seen("/v1/customers")]
    assert pages == ["1", "1", "1", "2", "3", "4", "5", "6"]  # 429, 503, then 5 full pages + 1 empty
    assert_registered(ws, "src_api")


def test_files_source_on_s3(ws, moto_s3):  # noqa: F811
    frame = pd.read_csv(CUSTOMERS)
    for part, chunk in enumerate((frame.iloc[:2500], frame.iloc[2500:])):
        buffer = io.BytesIO()
        chunk.to_parquet(buffer, index=False)
        moto_s3.put(f"churn/customers/part-{part}.parquet", buffer.getvalue())
    output = run(ws, "src_s3", f"""\
        - name: customers
          type: files
          path: s3://{moto_s3.bucket}/churn/customers/*.parquet
          storage_options:
            endpoint_url: {moto_s3.endpoint}
            region: {moto_s3.region}
            access_key_id: ${{S3_ACCESS_KEY}}
            secret_access_key: ${{S3_SECRET_KEY}}
        """)
    assert ingested(output) == (5000, 12, 1)
    assert moto_s3.secret_access_key not in output
    assert_registered(ws, "src_s3")


def test_database_joined_with_api_on_customer_id(ws, postgres, api_server):  # noqa: F811
    api_server.reset()
    output = run(ws, "src_join", f"""\
        - name: customers
          type: database
          connection: postgresql+psycopg://{postgres.user}:${{PG_PASSWORD}}@127.0.0.1:{postgres.port}/{postgres.database}
          query: SELECT * FROM customers
        - name: usage
          type: api
          endpoint: {api_server.url}/v1/usage
          authentication: {{method: bearer, token: "${{USAGE_API_TOKEN}}"}}
          params: {{limit: 2000}}
          records_path: items
          pagination: {{type: cursor, cursor_param: cursor, cursor_path: meta.next_cursor}}
          join: {{on: customer_id, how: left}}
        """, extra_features=", logins_30d, data_gb_30d")
    assert ingested(output) == (5000, 14, 2)
    assert len(api_server.seen("/v1/usage")) == 3
    assert_registered(ws, "src_join")


def test_wrong_api_token_fails_naming_endpoint_and_method_only(ws, api_server):  # noqa: F811
    spec = ws.path / "bad_token.yaml"
    spec.write_text(SPEC.format(name="src_bad_token", extra="", sources=textwrap.indent(textwrap.dedent(f"""\
        - name: customers
          type: api
          endpoint: {api_server.url}/v1/customers
          authentication: {{method: bearer, token: "${{USAGE_API_TOKEN}}"}}
          records_path: data
        """), "  ")))
    wrong = "wrong-token-S3CRET-0d9e"
    result = Workspace(ws.path, spec, {**ws.env, "USAGE_API_TOKEN": wrong}).rayline("run", spec.name)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"{api_server.url}/v1/customers" in output and "401 Unauthorized" in output
    assert "authentication method bearer" in output and "reading customers (api) failed" in output
    assert wrong not in output


def test_postgresql_sharded_read_plan_and_wrong_password(postgres):  # noqa: F811
    """Ray's SQL datasource with our factory and shard plan: 4 real shards, every row once."""
    from ray.data._internal.datasource.sql_datasource import SQLDatasource

    from pipeline.sources.database import ConnectionFactory, DatabaseError, _shard_plan

    factory = ConnectionFactory(postgres.url)
    hash_fn, keys = _shard_plan(factory.backend, factory.dialect, ["customer_id"])
    datasource = SQLDatasource("SELECT * FROM customers", factory, shard_hash_fn=hash_fn, shard_keys=keys)
    tasks = datasource.get_read_tasks(4)
    assert len(tasks) == 4  # sharding supported: not the single-task fallback
    ids = [i for task in tasks for block in task() for i in block.column("customer_id").to_pylist()]
    assert len(ids) == len(set(ids)) == 5000

    wrong = ConnectionFactory(postgres.url.replace(postgres.password, "not-the-S3CRET"))
    with pytest.raises(DatabaseError) as info:
        wrong.probe("SELECT 1")
    message = str(info.value)
    assert f"postgresql database 'rayline' on 127.0.0.1:{postgres.port}" in message
    assert "password authentication failed" in message
    assert "not-the-S3CRET" not in message and postgres.password not in message
