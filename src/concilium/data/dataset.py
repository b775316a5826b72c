"""Datasets: one owner's table, loaded from a file or a dataframe and checked
against its schema before anything is shared.

Sources: CSV, Parquet, a SQLite or DuckDB table, or (Python) a pandas,
polars or pyarrow table. Every row is checked; the first problem raises a
:class:`~concilium.errors.DatasetError` naming the column and the 1-based data
row (never the value), and nothing is shared:

* a missing column, or values of the wrong type;
* a missing value (NULL, empty, NaN) in a column that is not nullable;
* a value outside the column's public bounds, or outside the fixed-point
  codec's range;
* a category outside the public domain;
* a repeated key in a unique key column;
* an empty table.

A loaded dataset holds a normalized :class:`pyarrow.Table` (int64, float64,
bool, string for categories) that the owner's local engine (DuckDB) queries.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from concilium.data.schema import Column, ColumnType, Schema
from concilium.errors import DatasetError
from concilium.ring.fixed import FixedPointCodec

__all__ = ["Dataset"]

_ARROW_TYPES = {
    ColumnType.INT: pa.int64(),
    ColumnType.KEY: pa.int64(),
    ColumnType.FIXED: pa.float64(),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.CATEGORY: pa.string(),
}


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0]) + 1


@dataclass(frozen=True)
class Dataset:
    """A validated table of one data owner."""

    name: str
    schema: Schema
    table: pa.Table
    #: (computation id, row predicate) of the queries released on this dataset that
    #: this owner took part in (its ledger's), for the differencing check
    releases: tuple[tuple[str, str], ...] = ()

    @property
    def rows(self) -> int:
        return self.table.num_rows

    # -- sources --------------------------------------------------------------------
    @classmethod
    def from_arrow(cls, name: str, table: pa.Table, schema: Schema) -> Dataset:
        try:
            return cls(name, schema, _validated(table, schema))
        except DatasetError as error:
            raise DatasetError(f"dataset {name!r}: {error}", column=error.column,
                               row=error.row) from None

    @classmethod
    def from_pandas(cls, name: str, frame: Any, schema: Schema) -> Dataset:
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise DatasetError(f"dataset {name!r}: a column mixes types ({error})") from None
        return cls.from_arrow(name, table, schema)

    @classmethod
    def from_polars(cls, name: str, frame: Any, schema: Schema) -> Dataset:
        return cls.from_arrow(name, frame.to_arrow(), schema)

    @classmethod
    def from_frame(cls, name: str, frame: Any, schema: Schema) -> Dataset:
        """A pandas, polars or pyarrow table."""
        if isinstance(frame, pa.Table):
            return cls.from_arrow(name, frame, schema)
        if hasattr(frame, "to_arrow") and not hasattr(frame, "iloc"):
            return cls.from_polars(name, frame, schema)
        if hasattr(frame, "iloc"):
            return cls.from_pandas(name, frame, schema)
        raise DatasetError(f"dataset {name!r}: expected a pandas, polars or pyarrow table, "
                           f"got {type(frame).__name__}")

    @classmethod
    def from_csv(cls, name: str, path: str | Path, schema: Schema) -> Dataset:
        import pyarrow.csv as pacsv

        _require_file(name, path)
        # read every column as text and convert here, so that a bad value is reported
        # by column and row, never by its content
        types = {column: pa.string() for column in _csv_header(name, path)}
        convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
        try:
            table = pacsv.read_csv(str(path), convert_options=convert)
        except pa.ArrowInvalid as error:
            raise DatasetError(f"dataset {name!r} ({path}): "
                               f"{_csv_problem(error, path, convert)}") from None
        return cls.from_arrow(name, table, schema)

    @classmethod
    def from_parquet(cls, name: str, path: str | Path, schema: Schema) -> Dataset:
        import pyarrow.parquet as pq

        _require_file(name, path)
        try:
            table = pq.read_table(str(path))
        except (pa.ArrowInvalid, OSError) as error:
            raise DatasetError(f"dataset {name!r} ({path}): not a readable Parquet file "
                               f"({error})") from None
        return cls.from_arrow(name, table, schema)

    @classmethod
    def from_sqlite(cls, name: str, path: str | Path, table: str, schema: Schema) -> Dataset:
        _require_file(name, path)
        if not table.isidentifier():
            raise DatasetError(f"dataset {name!r}: {table!r} is not a table name")
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
                cursor = connection.execute(f'SELECT * FROM "{table}"')
                names = [d[0] for d in cursor.description]
                rows = cursor.fetchall()
        except sqlite3.Error as error:
            raise DatasetError(f"dataset {name!r}: cannot read table {table!r} from "
                               f"{path}: {error}") from None
        columns: list[tuple[Any, ...]] = (list(zip(*rows, strict=True)) if rows
                                          else [() for _ in names])
        arrays = {}
        for column_name, values in zip(names, columns, strict=True):
            try:
                arrays[column_name] = pa.array(list(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise DatasetError(f"dataset {name!r}: column {column_name!r} mixes types",
                                   column=column_name) from None
        return cls.from_arrow(name, pa.table(arrays), schema)

    @classmethod
    def from_duckdb(cls, name: str, path: str | Path, table: str, schema: Schema) -> Dataset:
        import duckdb

        _require_file(name, path)
        try:
            with duckdb.connect(str(path), read_only=True) as connection:
                arrow = connection.table(table).to_arrow_table()
        except duckdb.Error as error:
            raise DatasetError(f"dataset {name!r}: cannot read table {table!r} from "
                               f"{path}: {error}") from None
        return cls.from_arrow(name, arrow, schema)


def _require_file(name: str, path: str | Path) -> None:
    if not Path(path).is_file():
        raise DatasetError(f"dataset {name!r}: no file at {path}")
    if Path(path).stat().st_size == 0:
        raise DatasetError(f"dataset {name!r}: {path} is empty")


def _csv_header(name: str, path: str | Path) -> list[str]:
    """The column names of a CSV file's first line."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        raise DatasetError(f"dataset {name!r}: {path} is not a readable UTF-8 CSV "
                           "file") from None
    if not header:
        raise DatasetError(f"dataset {name!r}: {path} has no header line")
    return header


def _csv_problem(error: Exception, path: str | Path, convert: Any) -> str:
    import pyarrow.csv as pacsv

    text = str(error)
    if "Empty CSV file" in text:
        return "the file is empty"
    if "column" in text and "not exist" in text:
        return "a schema column is missing from the header"
    if "Expected" in text and "columns, got" in text:
        # read again on one thread, which numbers the lines, to name the ragged row
        found: list[tuple[int | None, int, int]] = []

        def record(row: Any) -> str:
            found.append((row.number, row.expected_columns, row.actual_columns))
            return "error"

        with contextlib.suppress(pa.ArrowInvalid):
            pacsv.read_csv(str(path), read_options=pacsv.ReadOptions(use_threads=False),
                           parse_options=pacsv.ParseOptions(invalid_row_handler=record),
                           convert_options=convert)
        if found and found[0][0] is not None:
            line, expected, actual = found[0]
            assert line is not None
            return (f"data row {line - 1} (line {line} of the file) has {actual} fields, "
                    f"the header has {expected}")
    return "the file is not well-formed CSV (check the header and the field counts)"


def _validated(table: pa.Table, schema: Schema) -> pa.Table:
    if table.num_rows == 0:
        raise DatasetError("the dataset has no rows")
    if table.num_rows > schema.rows_bound:
        raise DatasetError(f"the dataset has {table.num_rows:,} rows, more than the schema's "
                           f"max_rows of {schema.rows_bound:,} per owner; state a larger "
                           "max_rows in the schema (it bounds what sums must hold)")
    present = {n.lower(): n for n in table.column_names}
    listed = {n.lower() for n in (*schema.names, *schema.ignored)}
    unknown = [n for n in table.column_names if n.lower() not in listed]
    if unknown:
        raise DatasetError(f"the data has column(s) {', '.join(map(repr, unknown))} that the "
                           "schema does not list; remove them from the file, or list them "
                           'in the schema (usage = "ignore" drops a column on load)',
                           column=unknown[0])
    columns = {}
    for column in schema.columns:
        source = present.get(column.name.lower())
        if source is None:
            raise DatasetError(f"column {column.name!r} is missing (the data has "
                               f"{', '.join(table.column_names)})", column=column.name)
        columns[column.name] = _checked(column, table.column(source))
    return pa.table(columns)


def _checked(column: Column, values: pa.ChunkedArray) -> pa.Array:
    name = column.name
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    array = _converted(column, array)
    missing = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if column.type is ColumnType.FIXED:
        floats = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
        missing |= np.isnan(floats)
    if missing.any() and not column.nullable:
        raise DatasetError(f"column {name!r} has a missing value (NULL or NaN) in row "
                           f"{_first(missing)} but is not nullable", column=name,
                           row=_first(missing))
    present = ~missing
    if column.type is ColumnType.CATEGORY:
        known = np.asarray(pc.is_in(array, value_set=pa.array(column.domain)).to_numpy(
            zero_copy_only=False), dtype=bool)
        unknown = present & ~known
        if unknown.any():
            raise DatasetError(f"column {name!r} has a value outside its public domain in row "
                               f"{_first(unknown)}", column=name, row=_first(unknown))
        return array
    if column.type is ColumnType.BOOL:
        return array
    numbers = np.asarray(pc.fill_null(array, 0).to_numpy(zero_copy_only=False))
    if column.type is ColumnType.FIXED:
        numbers = np.where(missing, 0.0, numbers.astype(np.float64))
        limit = FixedPointCodec().max_magnitude
        outside = present & (np.abs(numbers) >= limit)
        if outside.any():
            raise DatasetError(f"column {name!r} has a value beyond the fixed-point range "
                               f"(+-2^31) in row {_first(outside)}", column=name,
                               row=_first(outside))
    _check_bounds(column, numbers, present)
    if column.decimals is not None:
        _check_decimals(column, numbers, present)
    if column.unique:
        _check_unique(column, numbers, present)
    return array


def _converted(column: Column, array: pa.Array) -> pa.Array:
    target = _ARROW_TYPES[column.type]
    if array.type == target:
        return array
    if column.type is ColumnType.BOOL and pa.types.is_integer(array.type):
        numbers = np.asarray(pc.fill_null(array, 0).to_numpy(zero_copy_only=False))
        bad = ~np.isin(numbers, (0, 1)) & ~np.asarray(
            array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if bad.any():
            raise DatasetError(f"column {column.name!r} must be boolean (0/1, true/false); "
                               f"row {_first(bad)} is not", column=column.name, row=_first(bad))
        return pc.cast(array, pa.bool_())
    if column.type is ColumnType.BOOL and pa.types.is_string(array.type):
        lowered = pc.utf8_lower(array)
        truth = pc.is_in(lowered, value_set=pa.array(["true", "t", "yes", "1"]))
        falsity = pc.is_in(lowered, value_set=pa.array(["false", "f", "no", "0"]))
        bad = ~np.asarray(pc.or_(truth, falsity).to_numpy(zero_copy_only=False), dtype=bool) & (
            ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool))
        if bad.any():
            raise DatasetError(f"column {column.name!r} must be boolean; row {_first(bad)} is "
                               "not", column=column.name, row=_first(bad))
        return pc.if_else(array.is_null(), pa.scalar(None, pa.bool_()), truth)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        array = _parsed_text(column, array)
        if array.type == target:
            return array
    if column.type in (ColumnType.INT, ColumnType.KEY) and pa.types.is_floating(array.type):
        numbers = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
        fractional = ~np.isnan(numbers) & (numbers != np.round(numbers))
        if fractional.any():
            raise DatasetError(f"column {column.name!r} must hold integers; row "
                               f"{_first(fractional)} has a fraction", column=column.name,
                               row=_first(fractional))
    try:
        return pc.cast(array, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        kind = column.type.value
        raise DatasetError(f"column {column.name!r} must hold {kind} values; its data has "
                           f"type {array.type}", column=column.name) from None


def _parsed_text(column: Column, array: pa.Array) -> pa.Array:
    """Text (CSV, or strings in a dataframe) to the column's type, naming the first row
    that does not parse."""
    if column.type in (ColumnType.CATEGORY, ColumnType.BOOL):
        return array
    try:  # exact for integers beyond 2^53
        return pc.cast(pc.utf8_trim_whitespace(array), _ARROW_TYPES[column.type])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    import pandas as pd

    text = array.to_pandas()
    parsed = pd.to_numeric(text.str.strip(), errors="coerce")
    bad = np.asarray(parsed.isna() & text.notna(), dtype=bool)
    if bad.any():
        raise DatasetError(f"column {column.name!r} must hold {column.type.value} values; row "
                           f"{_first(bad)} is not a number", column=column.name,
                           row=_first(bad))
    return pa.array(parsed.to_numpy(dtype=np.float64, na_value=np.nan),
                    mask=np.asarray(text.isna(), dtype=bool))


def _check_bounds(column: Column, numbers: np.ndarray, present: np.ndarray) -> None:
    if column.low is not None:
        below = present & (numbers < column.low)
        if below.any():
            raise DatasetError(f"column {column.name!r} is below its lower bound {column.low} "
                               f"in row {_first(below)}", column=column.name,
                               row=_first(below))
    if column.high is not None:
        above = present & (numbers > column.high)
        if above.any():
            raise DatasetError(f"column {column.name!r} is above its upper bound "
                               f"{column.high} in row {_first(above)}", column=column.name,
                               row=_first(above))


def _check_decimals(column: Column, numbers: np.ndarray, present: np.ndarray) -> None:
    assert column.decimals is not None
    scaled = numbers * 10.0**column.decimals
    off = present & (np.abs(scaled - np.round(scaled)) > 1e-6 * np.maximum(1.0, np.abs(scaled)))
    if off.any():
        raise DatasetError(f"column {column.name!r} has more than {column.decimals} decimal "
                           f"places in row {_first(off)}", column=column.name, row=_first(off))


def _check_unique(column: Column, numbers: np.ndarray, present: np.ndarray) -> None:
    values = numbers[present]
    order = np.argsort(values, kind="stable")
    repeated = np.flatnonzero(values[order][1:] == values[order][:-1])
    if repeated.size:
        rows = np.flatnonzero(present)[order[repeated + 1]]
        row = int(rows.min()) + 1
        raise DatasetError(f"key column {column.name!r} is unique but row {row} repeats an "
                           "earlier key", column=column.name, row=row)
