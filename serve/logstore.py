"""Every prediction with its request id, and the outcomes clients report back (`POST /feedback`),
kept in a SQL database (SQLite beside MLflow by default; any SQLAlchemy URL, e.g. PostgreSQL,
when replicas run on several nodes). Monitoring and the A/B analysis read from here.

Predictions are buffered and written by a background thread in one transaction per flush (every
`flush_s`), so logging costs the request path an append; feedback is written at once, because a
client that got a 2xx expects it kept.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Optional

import pydantic_core
import sqlalchemy as sa

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions", metadata,
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),       # index of the record in its request
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("variant", sa.String(16), nullable=False),
    sa.Column("assignment_key", sa.String(256)),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("prediction", sa.Text, nullable=False),
    sa.Column("latency_ms", sa.Float),
    sa.Column("shadow", sa.Boolean, nullable=False, default=False),
)
feedback = sa.Table(
    "feedback", metadata,
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False, default=0),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("label", sa.Text),
    sa.Column("conversion", sa.Boolean),
    sa.Column("revenue", sa.Float),
    sa.Column("extra", sa.Text),
)


class LogStore:
    def __init__(self, uri: str, flush_s: float = 1.0, max_buffer: int = 2000):
        self.engine = sa.create_engine(uri, pool_pre_ping=True)
        if uri.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _wal(connection, _record):  # readers (monitoring) don't block the writer
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA busy_timeout=10000")
        metadata.create_all(self.engine)
        self._buffer: list[Any] = []   # rows (dicts) or whole requests (tuples, see add_request)
        self._pending = 0
        self._lock = threading.Lock()
        self._write = threading.Lock()  # one writer at a time: the flusher or a caller
        self._max = max_buffer
        self._wake = threading.Event()
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_every, args=(flush_s,), daemon=True,
                                         name="rayline-logstore")
        self._flusher.start()

    def add_predictions(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._buffer.extend(rows)
            self._pending += len(rows)
            if self._pending >= self._max:
                self._wake.set()

    def add_request(self, request_id: str, model_name: str, version: str, variant: str,
                    records: list[dict], outputs: list[dict], keys: list[Optional[str]],
                    positions: list[int], latency_ms: float, shadow: bool = False) -> None:
        """One request's predictions (records[positions[k]] scored as outputs[k]), kept as they
        are: the rows and their JSON are made by the flusher, off the request path."""
        entry = (request_id, model_name, version, variant, records, outputs, keys, positions,
                 latency_ms, shadow, time.time())
        with self._lock:
            self._buffer.append(entry)
            self._pending += len(positions)
            if self._pending >= self._max:
                self._wake.set()

    def _flush_every(self, seconds: float) -> None:
        while not self._closed:
            self._wake.wait(seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a failed write keeps its rows for the next try
                time.sleep(seconds)

    def flush(self) -> int:
        with self._write:
            with self._lock:
                entries, self._buffer, self._pending = self._buffer, [], 0
            rows = _expand(entries)
            if rows:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(predictions.insert(), rows)
                except Exception:
                    with self._lock:
                        self._buffer[:0] = rows
                        self._pending += len(rows)
                    raise
            return len(rows)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()

    def known(self, request_id: str) -> bool:
        self.flush()
        with self.engine.connect() as conn:
            return conn.execute(sa.select(predictions.c.request_id)
                                .where(predictions.c.request_id == request_id).limit(1)).first() is not None

    def add_feedback(self, request_id: str, position: int, label: Any, conversion: Optional[bool],
                     revenue: Optional[float], extra: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(feedback.insert(), [{
                "request_id": request_id, "position": position, "ts": time.time(),
                "label": None if label is None else json.dumps(label), "conversion": conversion,
                "revenue": revenue, "extra": json.dumps(extra) if extra else None}])


def _expand(entries: list[Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for entry in entries:
        if isinstance(entry, dict):
            rows.append(entry)
            continue
        request_id, name, version, variant, records, outputs, keys, positions, latency, shadow, ts = entry
        rows.extend(prediction_rows(request_id, name, version, variant, [records[p] for p in positions],
                                    outputs, [keys[p] for p in positions], latency, shadow=shadow,
                                    positions=positions, ts=ts))
    return rows


def _json(value: Any) -> str:
    # pydantic-core's encoder: ~10x json.dumps(default=str) per small dict; non-JSON values
    # (numpy scalars, dates) fall back to str as before.
    return pydantic_core.to_json(value, fallback=str, inf_nan_mode="null").decode()


def prediction_rows(request_id: str, model_name: str, version: str, variant: str,
                    records: list[dict], outputs: list[dict], keys: list[Optional[str]],
                    latency_ms: float, shadow: bool = False, positions: Optional[list[int]] = None,
                    ts: Optional[float] = None) -> list[dict]:
    now = ts if ts is not None else time.time()
    positions = positions if positions is not None else list(range(len(records)))
    return [{"request_id": request_id, "position": pos, "ts": now, "model_name": model_name,
             "model_version": version, "variant": variant, "assignment_key": key,
             "record": _json(record), "prediction": _json(output),
             "latency_ms": latency_ms, "shadow": shadow}
            for pos, record, output, key in zip(positions, records, outputs, keys)]
