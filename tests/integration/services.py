"""Real services for source tests, each on 127.0.0.1 and a free port, started once per session.

- PostgreSQL from Debian's package (initdb + pg_ctl as the `postgres` user when run as root),
  with a `customers` table loaded from the churn example;
- moto's S3 server (`moto_server`), with a bucket and upload helpers;
- a small HTTP JSON API (http.server in a thread): page and cursor pagination, bearer / API-key /
  basic auth, and injectable faults (429 with Retry-After, 503, a dropped connection).

Use the fixtures by importing them into a test module:
    from tests.integration.services import api_server, moto_s3, postgres  # noqa: F401
"""

from __future__ import annotations

import base64
import csv
import glob
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.integration.conftest import BIN, EXAMPLE, free_port, wait_for

CUSTOMERS_CSV = EXAMPLE / "data" / "customers.csv"
INT_COLUMNS = ("tenure_months", "senior_citizen", "num_support_calls", "churned")
FLOAT_COLUMNS = ("monthly_charges", "total_charges")


def customer_records() -> list[dict]:
    """customers.csv as JSON-like records: numbers as numbers, empty cells as None."""
    with open(CUSTOMERS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, value in row.items():
            if value == "":
                row[key] = None
            elif key in INT_COLUMNS:
                row[key] = int(value)
            elif key in FLOAT_COLUMNS:
                row[key] = float(value)
    return rows


def usage_records() -> list[dict]:
    """Deterministic usage per customer: what a product-analytics API would return."""
    rng = random.Random(7)
    return [{"customer_id": c["customer_id"], "logins_30d": rng.randint(0, 60),
             "data_gb_30d": round(rng.uniform(0, 250), 2)} for c in customer_records()]


# --------------------------------------------------------------------------- PostgreSQL

@dataclass
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str
    root: Path

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def connect(self, database: Optional[str] = None, autocommit: bool = False):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, dbname=database or self.database,
                               autocommit=autocommit)


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL server's bin directory; a clear failure if there is none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise RuntimeError("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/postgres): "
                       "install Debian's postgresql package (`apt-get install -y postgresql`, "
                       "as .ci/run does)")


@contextmanager
def run_postgres(database: str = "rayline", user: str = "rayline",
                 password: str = "pg-secret-8d1e") -> Iterator[Postgres]:
    bindir = postgres_bin()
    # Under /tmp itself: pytest's tmp dirs sit below a 0700 root directory postgres cannot enter.
    root = Path(tempfile.mkdtemp(prefix="rayline-pg-"))
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    data, sockets, log = root / "data", root / "sock", root / "postgres.log"
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    sockets.mkdir()
    if as_root:
        for path in (sockets, pwfile):
            shutil.chown(path, "postgres", "postgres")
    port = free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            detail = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}\n{detail}")

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", f"-k {sockets} -p {port} -h 127.0.0.1 -c fsync=off -c full_page_writes=off", "start")
        started = True
        server = Postgres(host="127.0.0.1", port=port, user=user, password=password,
                          database=database, root=root)
        with server.connect(database="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        load_customers(server)
        yield server
    finally:
        if started:
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                            "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def load_customers(server: Postgres, table: str = "customers") -> None:
    with server.connect() as conn:
        conn.execute(f"""
            CREATE TABLE {table} (
                customer_id       text PRIMARY KEY,
                user_id           text,
                signup_date       date,
                tenure_months     integer,
                monthly_charges   numeric(8, 2),
                total_charges     numeric(10, 2),
                contract          text,
                payment_method    text,
                internet_service  text,
                senior_citizen    smallint,
                num_support_calls integer,
                churned           smallint
            )""")
        with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            copy.write(CUSTOMERS_CSV.read_bytes())


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    try:
        bindir = postgres_bin()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    del bindir
    with run_postgres() as server:
        yield server


# --------------------------------------------------------------------------- S3 (moto)

@dataclass
class MotoS3:
    endpoint: str
    bucket: str = "rayline-data"
    access_key_id: str = "moto-access-key"
    secret_access_key: str = "moto-secret-key-3b9f"
    region: str = "us-east-1"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key)

    def put(self, key: str, body: bytes) -> str:
        self.client().put_object(Bucket=self.bucket, Key=key, Body=body)
        return f"s3://{self.bucket}/{key}"


@contextmanager
def run_moto() -> Iterator[MotoS3]:
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(f"{endpoint}/moto-api/", 60, proc)
        server = MotoS3(endpoint=endpoint)
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    with run_moto() as server:
        yield server


# --------------------------------------------------------------------------- HTTP JSON API

@dataclass
class Fault:
    status: int                       # 0: close the connection without an answer
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class ApiServer:
    """Routes (all GET, all behind auth but /v1/open):
    /v1/customers  page pagination: ?page=N&per_page=M (default 100) -> {"data": [...], "page": N}
    /v1/usage      cursor pagination: ?cursor=C&limit=M -> {"items": [...], "meta": {"next_cursor"}}
    /v1/linked     next links: ?offset=K -> {"results": [...], "next": "http://.../v1/linked?offset=.."}
    /v1/open       no auth, a bare JSON list of 3 records
    /v1/loop       a cursor that never changes
    /v1/forbidden  403 for everyone;  /v1/html  200 text/html;  /v1/echo  the request as a record
    Credentials accepted: Bearer <token>, X-API-Key (or any *-Key header): <key>,
    Basic <username>:<password>.
    """

    token = "api-token-71c2"
    key = "api-key-44d0"
    username, password = "reader", "basic-pass-9a"

    def __init__(self) -> None:
        self.customers = customer_records()
        self.usage = usage_records()
        self.faults: deque[Fault] = deque()
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="api-server", daemon=True)

    def fail_next(self, status: int, headers: Optional[dict[str, str]] = None, times: int = 1) -> None:
        with self.lock:
            self.faults.extend(Fault(status, dict(headers or {})) for _ in range(times))

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.requests.clear()

    def seen(self, path: Optional[str] = None) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def start(self) -> "ApiServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- request handling (called from the handler's threads)

    def authorised(self, headers) -> bool:
        auth = headers.get("Authorization", "")
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return (auth == f"Bearer {self.token}" or auth == f"Basic {basic}"
                or any(value == self.key for name, value in headers.items()
                       if name.lower().endswith("key")))  # X-API-Key or another key header

    def answer(self, path: str, query: dict[str, str], headers) -> tuple[int, dict, Any]:
        with self.lock:
            self.requests.append(Seen(path, dict(query), dict(headers.items())))
            fault = self.faults.popleft() if self.faults else None
        if fault is not None:
            return fault.status, fault.headers, {"error": f"injected {fault.status}"}
        if path == "/v1/open":
            return 200, {}, self.customers[:3]
        if not self.authorised(headers):
            return 401, {"WWW-Authenticate": 'Bearer realm="api"'}, {"error": "unauthorized"}
        if path == "/v1/customers":
            page, size = int(query.get("page", 1)), int(query.get("per_page", 100))
            return 200, {}, {"data": self.customers[(page - 1) * size: page * size], "page": page,
                             "total": len(self.customers)}
        if path == "/v1/usage":
            offset = int(base64.urlsafe_b64decode(query["cursor"]).decode()) if "cursor" in query else 0
            limit = int(query.get("limit", 1000))
            end = offset + limit
            following = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(self.usage) else None
            return 200, {}, {"items": self.usage[offset:end], "meta": {"next_cursor": following}}
        if path == "/v1/linked":
            offset, limit = int(query.get("offset", 0)), 2
            rows = self.customers[:5][offset:offset + limit]
            following = f"{self.url}/v1/linked?offset={offset + limit}" if offset + limit < 5 else None
            return 200, {}, {"results": rows, "next": following}
        if path == "/v1/loop":
            return 200, {}, {"items": [{"n": 1}], "next_cursor": "same"}
        if path == "/v1/forbidden":
            return 403, {}, {"error": "forbidden"}
        if path == "/v1/html":
            return 200, {"Content-Type": "text/html"}, "<html>maintenance</html>"
        if path == "/v1/echo":
            return 200, {}, [{"query": json.dumps(query, sort_keys=True),
                              "headers": json.dumps({k.lower(): v for k, v in headers.items()},
                                                    sort_keys=True)}]
        return 404, {}, {"error": "not found"}


def _handler(server: ApiServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            status, headers, body = server.answer(parts.path, query, self.headers)
            if status == 0:  # a dropped connection
                self.close_connection = True
                self.connection.shutdown(2)
                return
            content_type = headers.pop("Content-Type", "application/json")
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # quiet
            pass

    return Handler


@contextmanager
def run_api_server() -> Iterator[ApiServer]:
    server = ApiServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def api_server() -> Iterator[ApiServer]:
    with run_api_server() as server:
        yield server
