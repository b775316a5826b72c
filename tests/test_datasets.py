"""Datasets load from every source and refuse bad rows by column and row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from concilium import simulate
from concilium.data.dataset import Dataset
from concilium.data.schema import Schema, load_schemas
from concilium.errors import ConfigurationError, DatasetError

SCHEMA = Schema.from_mapping({
    "id": {"type": "key", "unique": True},
    "age": {"type": "int", "low": 0, "high": 120},
    "cost": {"type": "fixed", "nullable": True},
    "ward": {"type": "category", "domain": ["a", "b"]},
    "urgent": {"type": "bool"},
})
FRAME = pd.DataFrame({"id": [7, 2**60, 3], "age": [30, 40, 50], "cost": [1.5, None, 3.25],
                      "ward": ["a", "b", "a"], "urgent": [True, False, True]})


def _check(dataset: Dataset) -> None:
    assert dataset.rows == 3
    table = dataset.table
    assert table.column("id").to_pylist() == [7, 2**60, 3]  # exact beyond 2^53
    assert table.column("cost").to_pylist() == [1.5, None, 3.25]
    assert table.column("urgent").to_pylist() == [True, False, True]
    assert table.schema.field("ward").type == pa.string()


def test_every_source_loads_the_same_rows(tmp_path: Path) -> None:
    FRAME.to_csv(tmp_path / "t.csv", index=False)
    FRAME.to_parquet(tmp_path / "t.parquet")
    with sqlite3.connect(tmp_path / "t.db") as connection:
        FRAME.to_sql("admissions", connection, index=False)
    with duckdb.connect(str(tmp_path / "t.duckdb")) as connection:
        connection.register("frame", FRAME)
        connection.execute("CREATE TABLE admissions AS SELECT * FROM frame")
    for dataset in (
        Dataset.from_csv("t", tmp_path / "t.csv", SCHEMA),
        Dataset.from_parquet("t", tmp_path / "t.parquet", SCHEMA),
        Dataset.from_sqlite("t", tmp_path / "t.db", "admissions", SCHEMA),
        Dataset.from_duckdb("t", tmp_path / "t.duckdb", "admissions", SCHEMA),
        Dataset.from_frame("t", FRAME, SCHEMA),
        Dataset.from_frame("t", pl.from_pandas(FRAME), SCHEMA),
        Dataset.from_frame("t", pa.Table.from_pandas(FRAME), SCHEMA),
    ):
        _check(dataset)


@pytest.mark.parametrize(("column", "values", "row", "message"), [
    ("age", [30, 121, 50], 2, "above its upper bound 120"),
    ("age", [30, 40, -1], 3, "below its lower bound 0"),
    ("age", [30, None, 50], 2, "missing value"),
    ("age", [30.0, 40.5, 50.0], 2, "has a fraction"),
    ("age", ["30", "forty", "50"], 2, "not a number"),
    ("cost", [1.0, 2.0**31, 3.0], 2, "fixed-point range"),
    ("ward", ["a", "c", "b"], 2, "outside its public domain"),
    ("ward", ["a", None, "b"], 2, "missing value"),
    ("id", [1, 2, 1], 3, "repeats an earlier key"),
    ("urgent", [1, 2, 0], 2, "must be boolean"),
    ("urgent", ["yes", "maybe", "no"], 2, "must be boolean"),
])
def test_bad_rows_are_named_by_column_and_row_not_value(column: str, values: list, row: int,
                                                        message: str) -> None:
    frame = FRAME.copy()
    frame[column] = pd.Series(values, dtype=object)
    with pytest.raises(DatasetError, match=message) as caught:
        Dataset.from_frame("admissions", frame, SCHEMA)
    assert caught.value.column == column and caught.value.row == row
    assert f"row {row}" in str(caught.value) and "forty" not in str(caught.value)


def test_nan_in_a_fixed_column_that_is_not_nullable() -> None:
    schema = Schema.from_mapping({"x": {"type": "fixed"}})
    with pytest.raises(DatasetError, match=r"missing value .* row 2"):
        Dataset.from_frame("t", pd.DataFrame({"x": [1.0, np.nan]}), schema)


def test_files_that_are_empty_malformed_or_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("id,age,cost,ward,urgent\n")
    (tmp_path / "short.csv").write_text("id,age,cost\n1,2,3\n")
    (tmp_path / "bad.csv").write_text("id,age,cost,ward,urgent\n1,20,1,a,true\n2,x7,1,a,true\n")
    cases = [("empty.csv", "is empty"), ("header.csv", "no rows"),
             ("short.csv", "missing"), ("bad.csv", "row 2 is not a number"),
             ("absent.csv", "no file")]
    for name, message in cases:
        with pytest.raises(DatasetError, match=message):
            Dataset.from_csv("t", tmp_path / name, SCHEMA)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        Dataset.from_parquet("t", tmp_path / "junk.parquet", SCHEMA)
    pq.write_table(pa.table({"id": [1]}), tmp_path / "thin.parquet")
    with pytest.raises(DatasetError, match="column 'age' is missing"):
        Dataset.from_parquet("t", tmp_path / "thin.parquet", SCHEMA)


def test_a_bad_owner_table_stops_the_query_before_anything_is_shared() -> None:
    bad = FRAME.copy()
    bad.loc[1, "age"] = 500
    with pytest.raises(DatasetError, match="row 2"):
        simulate("SELECT COUNT(*) FROM t", {"t": [FRAME, bad]}, {"t": SCHEMA})


def test_schemas_load_from_toml_and_refuse_nonsense(tmp_path: Path) -> None:
    path = tmp_path / "tables.toml"
    path.write_text('[tables.t.columns.ward]\ntype = "category"\ndomain = ["a", "b"]\n'
                    '[tables.t.columns.n]\ntype = "int"\nlow = 0\nhigh = 9\n')
    schema = load_schemas(path)["t"]
    assert schema.names == ("ward", "n") and schema.column("n").public_domain == tuple(
        range(10))
    for spec, message in [({"x": {"type": "text"}}, "type must be one of"),
                          ({"x": {"type": "category"}}, "needs its public domain"),
                          ({"x": {"type": "int", "low": 5, "high": 1}}, "low bound above"),
                          ({"x": {"type": "int", "unique": True}}, "only key columns"),
                          ({"x": {"type": "int", "usage": ["peek"]}}, "unknown usage"),
                          ({"x": {"type": "int", "colour": 1}}, "unknown settings")]:
        with pytest.raises(ConfigurationError, match=message):
            Schema.from_mapping(spec)


def test_a_column_the_schema_does_not_list_is_refused(tmp_path: Path) -> None:
    FRAME.assign(ssn=["123-45-6789", "987-65-4321", "555-12-3456"]).to_csv(
        tmp_path / "t.csv", index=False)
    with pytest.raises(DatasetError, match="'ssn' that the schema does not list") as caught:
        Dataset.from_csv("t", tmp_path / "t.csv", SCHEMA)
    assert "123-45" not in str(caught.value) and caught.value.column == "ssn"
    with pytest.raises(DatasetError, match="'ssn'"):
        Dataset.from_frame("t", FRAME.assign(ssn=1), SCHEMA)


def test_an_ignored_column_is_dropped_on_load_without_being_read(tmp_path: Path) -> None:
    mapping = SCHEMA.as_mapping()
    mapping["columns"]["ssn"] = {"usage": "ignore"}
    schema = Schema.from_mapping(mapping)
    assert schema.ignored == ("ssn",) and "ssn" not in schema
    # an ignored column may hold anything: it is never parsed
    FRAME.assign(ssn=["x", "1", ""]).to_csv(tmp_path / "t.csv", index=False)
    dataset = Dataset.from_csv("t", tmp_path / "t.csv", schema)
    _check(dataset)
    assert dataset.table.column_names == ["id", "age", "cost", "ward", "urgent"]
    assert Schema.from_mapping(schema.as_mapping()) == schema
    with pytest.raises(ConfigurationError, match="ignored; it takes no other settings"):
        Schema.from_mapping({"a": {"type": "int"}, "b": {"usage": "ignore", "low": 0}})
    with pytest.raises(ConfigurationError, match='usage is a list'):
        Schema.from_mapping({"a": {"type": "int", "usage": "filter"}})


def test_a_ragged_csv_row_is_named(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("age,ward\n30,a\n41,b\n52,a,secret-extra\n60,b\n")
    schema = Schema.from_mapping({"age": {"type": "int"},
                                  "ward": {"type": "category", "domain": ["a", "b"]}})
    with pytest.raises(DatasetError) as caught:
        Dataset.from_csv("t", tmp_path / "t.csv", schema)
    assert "data row 3 (line 4 of the file) has 3 fields, the header has 2" in str(
        caught.value)
    assert "secret-extra" not in str(caught.value)


def test_decimals_and_max_rows_are_checked_on_load() -> None:
    schema = Schema.from_mapping({"columns": {"cost": {"type": "fixed", "decimals": 2}},
                                  "max_rows": 3})
    assert schema.rows_bound == 3 and schema.column("cost").decimals == 2
    assert Schema.from_mapping(schema.as_mapping()) == schema
    Dataset.from_frame("t", pd.DataFrame({"cost": [0.1, 19.99, 1e9 + 0.07]}), schema)
    with pytest.raises(DatasetError, match="more than 2 decimal places in row 2"):
        Dataset.from_frame("t", pd.DataFrame({"cost": [1.5, 2.005]}), schema)
    with pytest.raises(DatasetError, match="4 rows, more than the schema's max_rows of 3"):
        Dataset.from_frame("t", pd.DataFrame({"cost": [1.0] * 4}), schema)
    with pytest.raises(ConfigurationError, match=r"decimals .* is for fixed columns"):
        Schema.from_mapping({"n": {"type": "int", "decimals": 2}})
    with pytest.raises(ConfigurationError, match="unknown table settings"):
        Schema.from_mapping({"columns": {"n": {"type": "int"}}, "max_row": 5})
