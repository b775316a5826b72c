"""Plans: what each owner computes alone (local pushdown), what is shared, what
is computed on secret shares, and what is revealed.

For a table held in horizontal partitions (the same columns at several
owners), every row lives at one owner, so the ``WHERE`` filter and the
per-group partial statistics (counts, sums, minima, maxima, means and
centered second moments) are computed by each owner alone, in DuckDB, over
the *whole public domain* of the group columns: every owner shares the same
number of values whatever its data, so sizes reveal nothing. The secure part
adds the partial statistics across owners and finishes each aggregate
(divisions for averages, the parallel-variance formula of Chan, Golub and
LeVeque, 1979, for variances and correlations) on secret shares.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from concilium.data.schema import ColumnType, Schema, load_schemas
from concilium.errors import QueryError, UnsupportedQuery
from concilium.query.sql import Query, parse_query

__all__ = ["MAX_GROUPS", "Catalog", "Plan", "Statistic", "TableEntry", "load_catalog",
           "plan_query"]

MAX_GROUPS = 100_000
#: Aggregates computed from shared rows (a secure sort), not partial statistics.
ROW_FUNCTIONS = ("quantile", "count_distinct")
_DUCKDB_TYPES = {ColumnType.INT: "BIGINT", ColumnType.KEY: "BIGINT", ColumnType.FIXED: "DOUBLE",
                 ColumnType.BOOL: "BOOLEAN", ColumnType.CATEGORY: "VARCHAR"}
_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "BOOLEAN", "UTINYINT",
                  "USMALLINT", "UINTEGER", "UBIGINT")


@dataclass(frozen=True)
class TableEntry:
    """A table of the catalog: its public schema and the parties that hold its rows."""

    schema: Schema
    owners: tuple[int, ...]


@dataclass(frozen=True)
class Catalog:
    """Tables by name, and the names of the parties that own them."""

    tables: dict[str, TableEntry]
    names: dict[int, str]


def load_catalog(path: str | Path) -> Catalog:
    """Schemas and owners from TOML: ``[tables.<name>]`` with ``owners = [...]`` (node
    names, in party order) and ``[tables.<name>.columns.<column>]`` sections."""
    schemas = load_schemas(path)
    document = tomllib.loads(Path(path).read_text())
    names: dict[int, str] = {}
    tables = {}
    for table, spec in document["tables"].items():
        owners = spec.get("owners", [0, 1, 2])
        indices = []
        for owner in owners:
            if isinstance(owner, int):
                indices.append(owner)
                continue
            known = {v: k for k, v in names.items()}
            if owner not in known:
                known[owner] = len(names)
                names[len(names)] = str(owner)
            indices.append(known[owner])
        tables[table] = TableEntry(schemas[table], tuple(indices))
    return Catalog(tables, names)


@dataclass(frozen=True)
class Statistic:
    """One per-group partial statistic an owner computes and shares."""

    name: str
    sql: str
    fixed: bool
    empty: float  # its value for a group with no (non-null) rows
    description: str


@dataclass(frozen=True)
class Plan:
    """How a query runs: local SQL, shared statistics, secure steps, revealed values."""

    query: Query
    entry: TableEntry
    groups: tuple[tuple[Any, ...], ...]
    arguments: dict[str, int]  # aggregate argument SQL -> index
    argument_fixed: tuple[bool, ...]
    pairs: dict[tuple[int, int], int]  # CORR arguments -> pair index
    statistics: tuple[Statistic, ...]
    local_sql: str
    row_arguments: tuple[int, ...] = ()  # arguments whose rows are shared (ROW_FUNCTIONS)
    row_sql: str | None = None  # the owners' row query for them

    @property
    def fixed_statistics(self) -> tuple[Statistic, ...]:
        return tuple(s for s in self.statistics if s.fixed)

    @property
    def integer_statistics(self) -> tuple[Statistic, ...]:
        return tuple(s for s in self.statistics if not s.fixed)


def _empty_table(connection: duckdb.DuckDBPyConnection, schema: Schema) -> None:
    columns = ", ".join(f'"{c.name}" {_DUCKDB_TYPES[c.type]}' for c in schema.columns)
    connection.execute(f"CREATE TABLE data ({columns})")


def _duckdb_type(connection: duckdb.DuckDBPyConnection, expression: str, where: str) -> str:
    try:
        rows = connection.execute(f"DESCRIBE SELECT {expression} AS value FROM data{where}"
                                  ).fetchall()
    except duckdb.Error as error:
        raise QueryError(f"{expression}: {str(error).splitlines()[0]}") from None
    return str(rows[0][1])


def _groups(query: Query, schema: Schema) -> tuple[tuple[Any, ...], ...]:
    domains = []
    for name in query.group_by:
        column = schema.column(name)
        domain = tuple(column.public_domain or ())
        domains.append(domain + ((None,) if column.nullable else ()))
    count = 1
    for domain in domains:
        count *= len(domain)
    if count > MAX_GROUPS:
        raise UnsupportedQuery(f"the group columns span {count:,} public groups; at most "
                               f"{MAX_GROUPS:,} are supported", construct="GROUP BY")
    return tuple(itertools.product(*domains))


def plan_query(sql: str, tables: Mapping[str, TableEntry]) -> Any:
    """Check ``sql`` against the catalog and decide what runs where: a :class:`Plan`,
    or a :class:`~concilium.query.join.JoinPlan` for a join."""
    from concilium.query import join

    if join.has_join(sql):
        return join.plan_join(sql, dict(tables))
    return plan_single(sql, tables)


def plan_single(sql: str, tables: Mapping[str, TableEntry]) -> Plan:
    """Plan a query over one table (horizontal partitions)."""
    query = parse_query(sql, {name: entry.schema for name, entry in tables.items()})
    entry = tables[query.table]
    connection = duckdb.connect()
    _empty_table(connection, entry.schema)
    where = "" if query.where is None else f" WHERE {query.where.sql(dialect='duckdb')}"
    _duckdb_type(connection, "1", where)  # checks the filter
    arguments: dict[str, int] = {}
    for aggregate in query.aggregates:
        for argument in aggregate.arguments:
            arguments.setdefault(argument.sql(dialect="duckdb"), len(arguments))
    fixed = []
    for text in arguments:
        kind = _duckdb_type(connection, text, where).upper()
        if kind == "VARCHAR" or kind.startswith(("DATE", "TIME", "INTERVAL", "BLOB")):
            raise QueryError(f"{text} is not numeric ({kind}); aggregates need numbers")
        fixed.append(not kind.startswith(_INTEGER_TYPES))
    pairs: dict[tuple[int, int], int] = {}
    for aggregate in query.aggregates:
        if aggregate.function == "corr":
            key = tuple(arguments[a.sql(dialect="duckdb")] for a in aggregate.arguments)
            pairs.setdefault((key[0], key[1]), len(pairs))
    statistics = _statistics(query, arguments, tuple(fixed), pairs)
    rows = tuple(sorted({arguments[a.arguments[0].sql(dialect="duckdb")]
                         for a in query.aggregates if a.function in ROW_FUNCTIONS}))
    return Plan(query=query, entry=entry, groups=_groups(query, entry.schema),
                arguments=arguments, argument_fixed=tuple(fixed), pairs=pairs,
                statistics=statistics, local_sql=_local_sql(query, arguments, tuple(fixed),
                                                            statistics),
                row_arguments=rows,
                row_sql=_row_sql(query, arguments, tuple(fixed), rows) if rows else None)


_INT_SENTINEL = float(2**62)
_FIXED_SENTINEL = float(2**31 - 1)


def _statistics(query: Query, arguments: dict[str, int], fixed: tuple[bool, ...],
                pairs: dict[tuple[int, int], int]) -> tuple[Statistic, ...]:
    needed: dict[str, Statistic] = {}

    def add(statistic: Statistic) -> None:
        needed.setdefault(statistic.name, statistic)

    add(Statistic("n", "COUNT(*)", False, 0, "row count"))
    for aggregate in query.aggregates:
        for argument in aggregate.arguments:
            i = arguments[argument.sql(dialect="duckdb")]
            text, kind = argument.sql(dialect="duckdb"), fixed[i]
            add(Statistic(f"c{i}", f"COUNT(a{i})", False, 0, f"COUNT({text})"))
            function = aggregate.function
            sentinel = _FIXED_SENTINEL if kind else _INT_SENTINEL
            if function in ("sum", "avg", "var_samp", "var_pop", "stddev_samp", "stddev_pop"):
                add(Statistic(f"s{i}", f"SUM(a{i})", kind, 0, f"SUM({text})"))
            if function in ROW_FUNCTIONS:  # per-group counts locate the rows of a group
                continue
            if function == "min":
                add(Statistic(f"lo{i}", f"MIN(a{i})", kind, sentinel, f"MIN({text})"))
            if function == "max":
                add(Statistic(f"hi{i}", f"MAX(a{i})", kind, -sentinel, f"MAX({text})"))
            if function.startswith(("var", "stddev")):
                add(Statistic(f"m{i}", f"AVG(a{i})", True, 0, f"AVG({text})"))
                add(Statistic(f"q{i}", f"VAR_POP(a{i}) * COUNT(a{i})", True, 0,
                              f"sum of squared deviations of {text} from the local mean"))
    for (x, y), j in pairs.items():
        both = f"FILTER (WHERE a{x} IS NOT NULL AND a{y} IS NOT NULL)"
        add(Statistic(f"pn{j}", f"COUNT(*) {both}", False, 0, "rows with both CORR inputs"))
        add(Statistic(f"pmx{j}", f"AVG(a{x}) {both}", True, 0, "local mean of CORR's x"))
        add(Statistic(f"pmy{j}", f"AVG(a{y}) {both}", True, 0, "local mean of CORR's y"))
        add(Statistic(f"pqx{j}", f"VAR_POP(a{x}) {both} * COUNT(*) {both}", True, 0,
                      "squared deviations of CORR's x"))
        add(Statistic(f"pqy{j}", f"VAR_POP(a{y}) {both} * COUNT(*) {both}", True, 0,
                      "squared deviations of CORR's y"))
        add(Statistic(f"pc{j}", f"COVAR_POP(a{x}, a{y}) * COUNT(*) {both}", True, 0,
                      "co-deviations of CORR's inputs"))
    return tuple(needed.values())


def _row_sql(query: Query, arguments: dict[str, int], fixed: tuple[bool, ...],
             rows: tuple[int, ...]) -> str:
    """Every row (filtered or not: sizes must not reveal the filter), its group
    columns, whether it passes WHERE, and the quantile arguments."""
    groups = [f'"{g}"' for g in query.group_by]
    passes = "1" if query.where is None else (
        f"CASE WHEN ({query.where.sql(dialect='duckdb')}) THEN 1 ELSE 0 END")
    texts = {i: text for text, i in arguments.items()}
    values = [f"CAST(({texts[i]}) AS {'DOUBLE' if fixed[i] else 'BIGINT'}) AS a{i}"
              for i in rows]
    return f"SELECT {', '.join([*groups, f'{passes} AS w', *values])}\nFROM data"


def _local_sql(query: Query, arguments: dict[str, int], fixed: tuple[bool, ...],
               statistics: tuple[Statistic, ...]) -> str:
    groups = [f'"{g}"' for g in query.group_by]
    casts = [f"CAST(({text}) AS {'DOUBLE' if fixed[i] else 'BIGINT'}) AS a{i}"
             for text, i in arguments.items()]
    inner = ", ".join(groups + casts) or "1 AS one"
    where = "" if query.where is None else f"\n  WHERE {query.where.sql(dialect='duckdb')}"
    stats = ",\n  ".join(f"{s.sql} AS {s.name}" for s in statistics)
    group_clause = f"\nGROUP BY {', '.join(groups)}" if groups else ""
    select = ", ".join([*groups, stats])
    return (f"SELECT {select}\nFROM (SELECT {inner}\n  FROM data{where}) AS base"
            f"{group_clause}")
