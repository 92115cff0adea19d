"""The Arrow paths that Ray Data blocks take (validation and features) give the same answers as
the pandas paths. No Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.features import FeaturePipeline
from pipeline.spec import Expectations
from pipeline.validation import REASONS, flag_batch, report_from_bad_rows, rules_for
from pipeline.validation.batches import _flag_table


def _table(n: int = 400) -> pa.Table:
    rng = np.random.default_rng(7)
    x = rng.normal(size=n) * 30
    x[::37] = np.nan
    ids = np.arange(n)
    ids[5] = ids[4]
    cat = np.array(["a", "b", "c", None, "zz"], dtype=object)[rng.integers(0, 5, n)]
    return pa.table({"id": ids, "x": pa.array(x, from_pandas=True), "c": pa.array(cat, type=pa.string()),
                     "flag": rng.integers(0, 3, n), "other": rng.normal(size=n)})


EXPECT = Expectations(columns=[
    {"column": "id", "type": "integer", "nullable": False, "unique": True},
    {"column": "x", "type": "numeric", "range": [-40, 40], "nullable": False},
    {"column": "c", "values": ["a", "b", "c"]},
    {"column": "flag", "values": [0, 1]},
])


def test_flag_table_matches_flag_batch_on_the_same_rows():
    table = _table()
    rules = rules_for(EXPECT)
    duplicates = {"id": [4]}
    arrow = _flag_table(table, rules, duplicates)
    assert arrow.column_names == table.column_names + [REASONS]
    assert arrow.select(table.column_names).equals(table)     # data passes through untouched
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)       # what Ray Data's pandas batches hold
    expected = flag_batch(frame, rules, duplicates)[REASONS].tolist()
    assert arrow.column(REASONS).to_pylist() == expected
    assert {k for r in expected for k in r.split(";") if k} == {
        "id:unique", "x:range", "x:nullable", "c:values", "flag:values"}
    plain = flag_batch(table.to_pandas(), rules, duplicates)[REASONS].tolist()  # numpy/object dtypes
    assert plain == expected


def test_report_samples_from_arrow_backed_rows_are_plain_values():
    table = _table()
    rules = rules_for(EXPECT)
    flagged = _flag_table(table, rules, {"id": [4]}).to_pandas(types_mapper=pd.ArrowDtype)
    bad = flagged[flagged[REASONS] != ""]
    report = report_from_bad_rows(rules, len(flagged), bad, "id", [])
    by_key = {f"{r.column}:{r.rule}": r for r in report.results}
    assert report.bad_rows == len(bad)
    assert by_key["x:nullable"].failed == int(np.isnan(table.column("x").to_numpy(zero_copy_only=False)).sum())
    assert all(s["value"] is None for s in by_key["x:nullable"].samples)   # not pd.NA
    assert by_key["id:unique"].samples == [{"value": 4, "id": 4}, {"value": 4, "id": 4}]


def test_transform_table_is_bit_identical_to_transform():
    table = _table()
    kinds = {"x": "numeric", "other": "numeric", "c": "categorical", "flag": "numeric"}
    steps = [{"name": "scale", "columns": ["x", "other"], "method": "standard_scaler"},
             {"name": "encode", "columns": ["c"], "method": "one_hot"}]
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    pipeline = FeaturePipeline.from_spec(steps, ["x", "other", "c", "flag"], kinds).fit(frame.iloc[:300])
    before = frame.copy()
    expected = pipeline.transform(frame)
    got = pipeline.transform_table(table)
    pd.testing.assert_frame_equal(frame, before)                   # the input is never written to
    assert got.column_names == pipeline.output_columns
    assert np.array_equal(np.column_stack([c.to_numpy() for c in got.columns]),
                          expected.to_numpy(dtype=np.float64))
    assert pipeline.transform_table(table.slice(0, 0)).num_rows == 0
