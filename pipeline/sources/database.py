"""Database source: any SQLAlchemy URL, read with Ray Data's `read_sql`.

Ray Data wants a connection factory that returns a DB-API 2 connection, called once per read
task (in the workers). `ConnectionFactory` builds it from the SQLAlchemy URL: sqlite3 for SQLite
(read-only), psycopg 3 for PostgreSQL (`postgresql://` and `postgresql+psycopg://`), and
SQLAlchemy's own `raw_connection()` for every other dialect whose driver is installed.

Sharding: `read_sql` splits a read into tasks with `MOD(ABS(<hash>(<keys>)), n)`, and only when
the database answers that probe; otherwise it reads in one task. Ray's default hash is MD5,
which returns text in PostgreSQL and does not exist in SQLite, so with `shard_keys` in the spec
the hash is picked per dialect (`_shard_plan`). Without `shard_keys`: one task.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pipeline.errors import RaylineError
from pipeline.spec import DatabaseSource

CONNECT_TIMEOUT_S = 10
_PSYCOPG_DRIVERS = ("postgresql", "postgresql+psycopg", "postgres")


class DatabaseError(RaylineError, RuntimeError):
    """A database source that cannot be read; the message never holds the password.
    `read_sources` reports it as a SourceError naming the source and its spec line."""

    title = "a source could not be read"


def read_database(source: DatabaseSource):
    import ray
    import ray.data

    factory = ConnectionFactory(source.connection.get_secret_value())
    sql = source_sql(source, factory)
    columns = factory.probe(sql)
    # Without shard keys: one read task and one block (Ray would split it into ~200 otherwise).
    kwargs: dict[str, Any] = {"override_num_blocks": 1}
    if source.shard_keys:
        missing = [k for k in source.shard_keys if k not in columns]
        if missing:
            raise DatabaseError(f"shard_keys {', '.join(missing)} not among the query's columns "
                                f"({', '.join(columns)})")
        hash_fn, key_expr = _shard_plan(factory.backend, factory.dialect, source.shard_keys)
        cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 2
        kwargs = {"shard_keys": key_expr, "shard_hash_fn": hash_fn,
                  # One read task per CPU: Ray's default asks for ~200 blocks (a query each).
                  "override_num_blocks": max(2, cpus)}
    ds = ray.data.read_sql(sql, factory, **kwargs)
    return ds.map_batches(_plain_numbers, batch_format="pyarrow", zero_copy_batch=True)


def source_sql(source: DatabaseSource, factory: "ConnectionFactory") -> str:
    """The query to run: the spec's query, or `SELECT * FROM <table>` quoted for the dialect."""
    if source.query is not None:
        # read_sql wraps the query in a subquery to count and shard it: no trailing semicolon.
        return source.query.strip().rstrip(";").strip()
    return f"SELECT * FROM {quote_table(source.table, factory.dialect)}"


def quote_table(name: str, dialect) -> str:
    """`schema.table` or `table`, each part quoted by the dialect where it needs quoting."""
    preparer = dialect.identifier_preparer
    schema, _, table = name.rpartition(".")
    quoted = preparer.quote(table)
    return f"{preparer.quote_schema(schema)}.{quoted}" if schema else quoted


def _shard_plan(backend: str, dialect, keys: list[str]) -> tuple[str, list[str]]:
    """(hash function, [key expression]) for Ray's `MOD(ABS(<fn>(<expr>)), n)`."""
    cols = [dialect.identifier_preparer.quote(k) for k in keys]
    if backend == "sqlite":
        return _SQLITE_HASH, [", ".join(cols)]          # registered on each connection
    if backend == "postgresql":
        # hashtext is an int4: widen it first, ABS(int4 minimum) overflows.
        return "", [f"hashtext(concat_ws('|', {', '.join(cols)}))::bigint"]
    if dialect.name in ("mysql", "mariadb"):
        return "CRC32", [f"CONCAT_WS('|', {', '.join(cols)})"]
    return "MD5", cols  # Ray's default; read_sql falls back to one task if the database refuses it


_SQLITE_HASH = "rayline_shard_hash"


def _sqlite_hash(*values: Any) -> int:
    digest = hashlib.md5("|".join("" if v is None else str(v) for v in values).encode()).digest()
    # 31 bits: SQLite's MOD works in doubles, and wider values lose their low bits there.
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _plain_numbers(table):
    """DECIMAL columns (PostgreSQL NUMERIC) as float64: features and validation expect floats."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_decimal(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.float64()))
    return table


@dataclass(frozen=True)
class ConnectionFactory:
    """Picklable: Ray ships it to every read task, which calls it for a DB-API connection."""
    url: str

    def __repr__(self) -> str:  # tracebacks and Ray's logs show this, never the password
        return f"ConnectionFactory({self.safe_url})"

    @property
    def parsed(self):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(self.url)
        except ArgumentError:
            raise DatabaseError("connection is not a SQLAlchemy URL (dialect+driver://user:password"
                                "@host:port/database)") from None
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url

    @property
    def backend(self) -> str:
        url = self.parsed
        if url.get_backend_name() == "sqlite":
            return "sqlite"
        if url.drivername in _PSYCOPG_DRIVERS:
            return "postgresql"
        return "sqlalchemy"

    @property
    def safe_url(self) -> str:
        try:
            return self.parsed.render_as_string(hide_password=True)
        except DatabaseError:
            return "<not a SQLAlchemy URL>"

    @property
    def dialect(self):
        from sqlalchemy.exc import NoSuchModuleError

        try:
            return self.parsed.get_dialect()()
        except NoSuchModuleError:
            raise DatabaseError(f"unknown database dialect {self.parsed.drivername!r} in "
                                f"{self.safe_url}") from None

    def __call__(self):
        backend = self.backend
        try:
            if backend == "sqlite":
                return self._sqlite()
            if backend == "postgresql":
                return self._psycopg()
            return self._sqlalchemy()
        except DatabaseError:
            raise
        except Exception as exc:
            raise DatabaseError(f"cannot connect to {self.describe()}: "
                                f"{self.scrub(str(exc)).strip()}") from None

    def describe(self) -> str:
        url = self.parsed
        if self.backend == "sqlite":
            return f"SQLite database {url.database or ':memory:'}"
        where = f"{url.host or 'localhost'}{f':{url.port}' if url.port else ''}"
        user = f" as user {url.username!r}" if url.username else ""
        return f"{url.get_backend_name()} database {url.database!r} on {where}{user}"

    def scrub(self, text: str) -> str:
        """Driver messages rarely echo a password; make sure of it."""
        password = self.parsed.password
        for secret in (self.url, str(password) if password else None):
            if secret:
                text = text.replace(secret, "***")
        return text

    def probe(self, sql: str) -> list[str]:
        """Connect and plan the query in the driver: a clear error before any Ray task starts."""
        conn = self()
        try:
            cursor = conn.cursor()
            cursor.execute(f"SELECT * FROM ({sql}) AS rayline_probe WHERE 1 = 0")
            columns = [d[0] for d in cursor.description or []]
            cursor.close()
            return columns
        except Exception as exc:
            raise DatabaseError(f"query failed on {self.describe()}: "
                                f"{self.scrub(str(exc)).strip()}") from None
        finally:
            try:
                conn.close()
            except Exception:
                pass

    # ---- one DB-API connection per backend

    def _sqlite(self) -> sqlite3.Connection:
        url = self.parsed
        database = url.database or ":memory:"
        if url.query.get("uri") in ("true", "1"):
            conn = sqlite3.connect(database, uri=True)
        elif database == ":memory:":
            conn = sqlite3.connect(database)
        else:
            if not os.path.exists(database):
                raise DatabaseError(f"SQLite database {database} does not exist")
            # Read-only: a source never writes, and a wrong path must not create an empty file.
            conn = sqlite3.connect(f"file:{quote(os.path.abspath(database))}?mode=ro", uri=True)
        conn.create_function(_SQLITE_HASH, -1, _sqlite_hash, deterministic=True)
        return conn

    def _psycopg(self):
        import psycopg

        url = self.parsed
        # ?sslmode=require&options=... pass through; a repeated key keeps its last value.
        params = {k: (v[-1] if isinstance(v, tuple) else v) for k, v in url.query.items()}
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        return psycopg.connect(host=url.host, port=url.port, user=url.username,
                               password=url.password, dbname=url.database, **params)

    def _sqlalchemy(self):
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        # NullPool: closing the proxied connection closes the real one (Ray closes after reading).
        return create_engine(self.parsed, poolclass=NullPool).raw_connection()

