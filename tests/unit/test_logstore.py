"""The prediction / feedback store behind the Serve app."""

from __future__ import annotations

import sqlite3
import time

from serve.logstore import LogStore, prediction_rows


def rows(request_id: str, n: int = 2) -> list[dict]:
    return prediction_rows(request_id, "churn", "3", "treatment", [{"x": i} for i in range(n)],
                           [{"prediction": 1}] * n, [f"user-{i}" for i in range(n)], 4.2)


def test_predictions_are_flushed_in_the_background(tmp_path):
    store = LogStore(f"sqlite:///{tmp_path}/s.db", flush_s=0.1)
    store.add_predictions(rows("r1", 3))
    deadline = time.time() + 5
    count = 0
    while time.time() < deadline and count < 3:
        time.sleep(0.1)
        count = sqlite3.connect(tmp_path / "s.db").execute("select count(*) from predictions").fetchone()[0]
    assert count == 3
    got = sqlite3.connect(tmp_path / "s.db").execute(
        "select request_id, position, model_version, variant, assignment_key, record from predictions "
        "order by position").fetchall()
    assert got[2] == ("r1", 2, "3", "treatment", "user-2", '{"x":2}')
    store.close()


def test_known_flushes_first_and_feedback_is_kept(tmp_path):
    store = LogStore(f"sqlite:///{tmp_path}/s.db", flush_s=60)
    store.add_predictions(rows("r2"))
    assert store.known("r2") and not store.known("r3")
    store.add_feedback("r2", 1, "yes", True, 9.5, {"channel": "sms"})
    [row] = sqlite3.connect(tmp_path / "s.db").execute(
        "select request_id, position, label, conversion, revenue, extra from feedback").fetchall()
    assert row == ("r2", 1, '"yes"', 1, 9.5, '{"channel": "sms"}')
    store.close()


def test_close_writes_what_is_buffered(tmp_path):
    store = LogStore(f"sqlite:///{tmp_path}/s.db", flush_s=60)
    store.add_predictions(rows("r4", 5))
    store.close()
    assert sqlite3.connect(tmp_path / "s.db").execute("select count(*) from predictions").fetchone()[0] == 5


def test_a_request_is_logged_one_row_per_record_at_its_position(tmp_path):
    """add_request keeps the request whole; the flush writes one row per record it scored, at
    the record's position in the request, with that record's key (here an A/B split: the
    treatment scored records 1 and 3 of four)."""
    store = LogStore(f"sqlite:///{tmp_path}/s.db", flush_s=60)
    records = [{"x": i, "when": float("nan") if i == 3 else i / 2} for i in range(4)]
    keys = [f"user-{i}" for i in range(4)]
    store.add_request("r5", "churn", "4", "treatment", records, [{"prediction": 1}, {"prediction": 0}],
                      keys, [1, 3], 2.5, shadow=True)
    assert store.known("r5")
    got = sqlite3.connect(tmp_path / "s.db").execute(
        "select position, model_version, variant, assignment_key, record, prediction, latency_ms, shadow "
        "from predictions order by position").fetchall()
    assert got == [(1, "4", "treatment", "user-1", '{"x":1,"when":0.5}', '{"prediction":1}', 2.5, 1),
                   (3, "4", "treatment", "user-3", '{"x":3,"when":null}', '{"prediction":0}', 2.5, 1)]
    store.close()
