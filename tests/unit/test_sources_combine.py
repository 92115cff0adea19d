"""pipeline.sources without Ray: the driver-side Arrow join behind `join: {on, how}`, and the
error text of a failed read (the reader's own exception, not Ray's wrapper)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.sources import _message, join_tables

CUSTOMERS = pa.table({"customer_id": ["C1", "C2", "C3"], "plan": ["a", "b", "a"], "n": [1, 2, 3]})
USAGE = pa.table({"customer_id": ["C1", "C3", "C4"], "logins": [5, 0, 9], "n": [10, 30, 40]})


def rows(table: pa.Table) -> list[dict]:
    return table.sort_by("customer_id").to_pylist()


def test_left_join_keeps_every_left_row_and_suffixes_a_taken_name():
    joined = join_tables(CUSTOMERS, USAGE, ["customer_id"], "left", "usage")
    assert joined.column_names == ["customer_id", "plan", "n", "logins", "n_usage"]
    assert rows(joined) == [
        {"customer_id": "C1", "plan": "a", "n": 1, "logins": 5, "n_usage": 10},
        {"customer_id": "C2", "plan": "b", "n": 2, "logins": None, "n_usage": None},
        {"customer_id": "C3", "plan": "a", "n": 3, "logins": 0, "n_usage": 30},
    ]


@pytest.mark.parametrize("how, ids", [
    ("inner", ["C1", "C3"]),
    ("right", ["C1", "C3", "C4"]),
    ("outer", ["C1", "C2", "C3", "C4"]),
])
def test_join_kinds(how, ids):
    joined = join_tables(CUSTOMERS, USAGE, ["customer_id"], how)
    assert [r["customer_id"] for r in rows(joined)] == ids
    assert "n_right" in joined.column_names


def test_join_on_several_keys():
    left = pa.table({"a": [1, 1, 2], "b": ["x", "y", "x"], "v": [1, 2, 3]})
    right = pa.table({"a": [1, 2], "b": ["y", "x"], "w": [20, 30]})
    joined = join_tables(left, right, ["a", "b"], "inner")
    assert sorted(joined.column("w").to_pylist()) == [20, 30]


def test_join_errors_name_the_missing_key_and_the_types():
    with pytest.raises(ValueError, match=r"usage has no column customer_id \(columns: id, logins\)"):
        join_tables(CUSTOMERS, pa.table({"id": ["C1"], "logins": [1]}), ["customer_id"], "left", "usage")
    with pytest.raises(pa.ArrowInvalid, match="Incompatible data types"):
        join_tables(CUSTOMERS, pa.table({"customer_id": [1], "x": [1]}), ["customer_id"], "left")


def test_message_unwraps_a_wrapped_cause():
    class Wrapper(Exception):
        def __init__(self, cause):
            super().__init__("ray::ReadSQL() long traceback ...")
            self.cause = cause

    assert _message(Wrapper(RuntimeError("no such table: custs"))) == "no such table: custs"
    assert _message(FileNotFoundError()) == "FileNotFoundError"
