"""Group keys with public domains: the grid of groups a query's result can have.

A group key is a column with a public domain (a category's values, booleans,
integers with close bounds; a nullable column adds NULL), or an expression over
one such column, or a histogram bucket ``FLOOR(x / width)`` of a column with
public bounds; its domain is worked out in DuckDB over the column's domain
(or the bucket edges). Every owner computes its statistics over the whole
grid, so sizes reveal nothing.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import duckdb
from sqlglot import exp

from concilium.data.schema import ColumnType, Schema
from concilium.errors import QueryError, UnsupportedQuery

__all__ = ["DUCKDB_TYPES", "MAX_GROUPS", "group_domain", "group_grid"]

MAX_GROUPS = 100_000
DUCKDB_TYPES = {ColumnType.INT: "BIGINT", ColumnType.KEY: "BIGINT", ColumnType.FIXED: "DOUBLE",
                ColumnType.BOOL: "BOOLEAN", ColumnType.CATEGORY: "VARCHAR"}


def group_domain(expression: exp.Expr, schema: Schema) -> tuple[Any, ...]:
    """The public values a group key can take: a column's public domain, or an
    expression over one column evaluated (in DuckDB) on that column's domain; for
    ``FLOOR(x / width)`` buckets of a bounded column, on the bucket edges."""
    (column_node,) = {c.name.lower(): c for c in expression.find_all(exp.Column)}.values()
    column = schema.column(column_node.name)
    if isinstance(expression, exp.Column):
        if column.public_domain is None:
            raise UnsupportedQuery(
                f"GROUP BY {column.name} needs a public domain (a category, or an integer "
                "with public bounds); group by a bucket FLOOR(x / width) instead",
                construct=column.name)
        values: tuple[Any, ...] = tuple(column.public_domain)
        return values + ((None,) if column.nullable else ())
    candidates: list[Any] | None = None
    if column.public_domain is not None:
        candidates = list(column.public_domain)
    else:
        for floor in expression.find_all(exp.Floor):
            ratio = floor.this
            if (isinstance(ratio, exp.Div) and isinstance(ratio.this, exp.Column)
                    and isinstance(ratio.expression, exp.Literal) and column.low is not None
                    and column.high is not None and float(ratio.expression.this) > 0):
                width = float(ratio.expression.this)
                first, last = math.floor(column.low / width), math.floor(column.high / width)
                if last - first < MAX_GROUPS:
                    candidates = [k * width for k in range(first, last + 1)]
    if candidates is None:
        raise UnsupportedQuery(
            "GROUP BY on an expression needs a column with a public domain, or a bucket "
            "FLOOR(x / width) of a column with public bounds: "
            f"{expression.sql(dialect='duckdb')}", construct=expression.sql(dialect="duckdb"))
    connection = duckdb.connect()
    connection.execute(f'CREATE TABLE domain ("{column.name}" '
                       f'{DUCKDB_TYPES[column.type]})')
    connection.executemany("INSERT INTO domain VALUES (?)", [[c] for c in candidates])
    try:
        rows = connection.execute(f"SELECT DISTINCT {expression.sql(dialect='duckdb')} AS g "
                                  "FROM domain ORDER BY g NULLS LAST").fetchall()
    except duckdb.Error as error:
        raise QueryError(f"GROUP BY {expression.sql(dialect='duckdb')}: "
                         f"{str(error).splitlines()[0]}") from None
    values = tuple(row[0] for row in rows)
    return values + ((None,) if column.nullable and None not in values else ())


def group_grid(expressions: tuple[exp.Expr, ...], schema: Schema
               ) -> tuple[tuple[tuple[Any, ...], ...], tuple[tuple[Any, ...], ...]]:
    """Each key's public domain, and the grid of their combinations (row-major)."""
    domains = tuple(group_domain(e, schema) for e in expressions)
    count = 1
    for domain in domains:
        count *= len(domain)
    if count > MAX_GROUPS:
        raise UnsupportedQuery(f"the group keys span {count:,} public groups; at most "
                               f"{MAX_GROUPS:,} are supported", construct="GROUP BY")
    return domains, tuple(itertools.product(*domains))
