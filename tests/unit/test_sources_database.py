"""pipeline.sources.database without Ray: the connection factory for SQLAlchemy URLs, quoting,
the shard plan per dialect, and errors that name the database but never the password."""

from __future__ import annotations

import os
import pickle
import sqlite3

import pytest
from sqlalchemy.dialects import mysql, postgresql, sqlite

from pipeline.sources.database import (
    ConnectionFactory, DatabaseError, _shard_plan, _sqlite_hash, quote_table, source_sql,
)
from pipeline.spec import DatabaseSource
from tests.integration.conftest import free_port

PASSWORD = "pw-S3CRET-41aa"


@pytest.fixture()
def sqlite_db(tmp_path):
    path = tmp_path / "crm.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (customer_id TEXT, tenure INTEGER, charges REAL)")
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                     [(f"C{i:03d}", i % 40, 10.5 + i) for i in range(200)])
    conn.execute('CREATE TABLE "order lines" (id INTEGER)')
    conn.commit()
    conn.close()
    return path


def test_sqlite_factory_is_read_only_and_picklable(sqlite_db):
    factory = pickle.loads(pickle.dumps(ConnectionFactory(f"sqlite:///{sqlite_db}")))
    assert factory.backend == "sqlite"
    conn = factory()
    assert conn.execute("SELECT COUNT(*) FROM customers").fetchone() == (200,)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM customers")
    conn.close()


def test_sqlite_missing_file_is_an_error_and_is_not_created(tmp_path):
    path = tmp_path / "nope.db"
    with pytest.raises(DatabaseError, match=f"SQLite database {path} does not exist"):
        ConnectionFactory(f"sqlite:///{path}")()
    assert not path.exists()


def test_sqlite_probe_names_columns_and_query_errors(sqlite_db):
    factory = ConnectionFactory(f"sqlite:///{sqlite_db}")
    assert factory.probe("SELECT * FROM customers") == ["customer_id", "tenure", "charges"]
    with pytest.raises(DatabaseError, match=r"query failed on SQLite database .*crm.db: no such table: custs"):
        factory.probe("SELECT * FROM custs")


def test_sqlite_shard_hash_is_registered_and_spreads_rows(sqlite_db):
    conn = ConnectionFactory(f"sqlite:///{sqlite_db}")()
    fn, (expr,) = _shard_plan("sqlite", sqlite.dialect(), ["customer_id", "tenure"])
    rows = conn.execute(f"SELECT MOD(ABS({fn}({expr})), 4) AS s, COUNT(*) FROM customers GROUP BY s").fetchall()
    conn.close()
    assert len(rows) == 4 and sum(n for _, n in rows) == 200 and min(n for _, n in rows) > 20
    assert _sqlite_hash("a", 1) == _sqlite_hash("a", 1) >= 0


def test_table_is_quoted_for_the_dialect(sqlite_db):
    src = DatabaseSource(type="database", connection=f"sqlite:///{sqlite_db}", table="order lines")
    factory = ConnectionFactory(src.connection.get_secret_value())
    assert source_sql(src, factory) == 'SELECT * FROM "order lines"'
    assert factory.probe(source_sql(src, factory)) == ["id"]
    pg = postgresql.dialect()
    assert quote_table("customers", pg) == "customers"
    assert quote_table("analytics.Customers", pg) == 'analytics."Customers"'
    assert quote_table('x"; DROP TABLE t; --', pg) == '"x""; DROP TABLE t; --"'
    assert quote_table("select", mysql.dialect()) == "`select`"


def test_query_loses_its_trailing_semicolon():
    src = DatabaseSource(type="database", connection="sqlite://", query="  SELECT 1 AS x;  \n")
    assert source_sql(src, ConnectionFactory("sqlite://")) == "SELECT 1 AS x"


def test_shard_plans():
    assert _shard_plan("postgresql", postgresql.dialect(), ["customer_id", "Region"]) == (
        "", ["hashtext(concat_ws('|', customer_id, \"Region\"))::bigint"])
    assert _shard_plan("sqlalchemy", mysql.dialect(), ["id"]) == ("CRC32", ["CONCAT_WS('|', id)"])
    assert _shard_plan("sqlalchemy", sqlite.dialect(), ["a", "b"]) == ("MD5", ["a", "b"])


@pytest.mark.parametrize("url", [
    f"postgresql://analyst:{PASSWORD}@db.internal:5433/crm",
    f"postgresql+psycopg://analyst:{PASSWORD}@db.internal:5433/crm",
    f"postgres://analyst:{PASSWORD}@db.internal:5433/crm",
])
def test_postgres_urls_use_psycopg3_and_hide_the_password(url):
    factory = ConnectionFactory(url)
    assert factory.backend == "postgresql"
    assert factory.parsed.drivername == "postgresql+psycopg"
    assert PASSWORD not in repr(factory) and "analyst:***@db.internal:5433/crm" in repr(factory)
    assert factory.describe() == "postgresql database 'crm' on db.internal:5433 as user 'analyst'"
    assert factory.scrub(f"oops {PASSWORD} and {url}") == "oops *** and ***"


def test_failed_postgres_connection_names_host_and_database_not_the_password():
    port = free_port()  # nothing listens there
    factory = ConnectionFactory(f"postgresql://analyst:{PASSWORD}@127.0.0.1:{port}/crm")
    with pytest.raises(DatabaseError) as info:
        factory()
    message = str(info.value)
    assert message.startswith(f"cannot connect to postgresql database 'crm' on 127.0.0.1:{port} "
                              "as user 'analyst': ")
    assert PASSWORD not in message


def test_other_dialects_go_through_sqlalchemy(sqlite_db):
    factory = ConnectionFactory(f"sqlite+pysqlite:///{sqlite_db}")
    assert factory.backend == "sqlite"  # the backend decides, whatever the driver
    missing = ConnectionFactory(f"mysql+pymysql://u:{PASSWORD}@127.0.0.1:{free_port()}/shop")
    assert missing.backend == "sqlalchemy"
    with pytest.raises(DatabaseError) as info:
        missing()
    assert "cannot connect to mysql database 'shop'" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_bad_urls():
    with pytest.raises(DatabaseError, match="not a SQLAlchemy URL") as info:
        ConnectionFactory(f"not a url {PASSWORD}")()
    assert PASSWORD not in str(info.value)
    assert repr(ConnectionFactory(f"not a url {PASSWORD}")) == "ConnectionFactory(<not a SQLAlchemy URL>)"
    with pytest.raises(DatabaseError, match="unknown database dialect 'nosuchdb'"):
        ConnectionFactory(f"nosuchdb://u:{PASSWORD}@h/d").dialect


def test_sqlite_uri_form(sqlite_db):
    factory = ConnectionFactory(f"sqlite:///file:{sqlite_db}?mode=ro&uri=true")
    conn = factory()
    assert conn.execute("SELECT COUNT(*) FROM customers").fetchone() == (200,)
    conn.close()
    assert os.path.exists(sqlite_db)


def test_sqlite_sharded_read_plan_through_rays_sql_datasource(sqlite_db):
    """What read_sql does with our factory and plan (no cluster needed): 4 shards, each row once."""
    from ray.data._internal.datasource.sql_datasource import SQLDatasource

    factory = ConnectionFactory(f"sqlite:///{sqlite_db}")
    hash_fn, keys = _shard_plan(factory.backend, factory.dialect, ["customer_id"])
    datasource = SQLDatasource("SELECT * FROM customers", factory, shard_hash_fn=hash_fn, shard_keys=keys)
    tasks = datasource.get_read_tasks(4)
    assert len(tasks) == 4  # sharding supported: not the single-task fallback
    ids = [i for task in tasks for block in task() for i in block.column("customer_id").to_pylist()]
    assert sorted(ids) == [f"C{i:03d}" for i in range(200)]
    assert len(SQLDatasource("SELECT * FROM customers", factory, shard_hash_fn="MD5",
                             shard_keys=["customer_id"]).get_read_tasks(4)) == 1  # Ray's default: no MD5


def test_unknown_shard_key_is_named_before_any_read(sqlite_db):
    from pipeline.sources.database import read_database

    src = DatabaseSource(type="database", connection=f"sqlite:///{sqlite_db}", table="customers",
                         shard_keys=["customer_id", "region"])
    with pytest.raises(DatabaseError, match=r"shard_keys region not among the query's columns "
                                            r"\(customer_id, tenure, charges\)"):
        read_database(src)
