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
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
from sqlglot import exp

from concilium.data.schema import ColumnType, Schema
from concilium.errors import QueryError, UnsupportedQuery
from concilium.governance.policy import OutputPolicy
from concilium.query import join
from concilium.query.catalog import Catalog, TableEntry, load_catalog
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
    domains: tuple[tuple[Any, ...], ...]  # each group key's public values
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


def _secret_group_plan(query: Query, entry: TableEntry, arguments: dict[str, int],
                       local: dict[str, int], fixed: tuple[bool, ...]) -> Plan:
    """GROUP BY a secret key: every row is shared (see concilium.query.secret_groups)."""
    for aggregate in query.aggregates:
        if aggregate.function not in ("count", "sum", "avg"):
            raise UnsupportedQuery(f"with GROUP BY on a secret key, COUNT, SUM and AVG are "
                                   f"supported yet, not {aggregate.sql}",
                                   construct=aggregate.sql)
    rows = tuple(range(len(arguments)))
    return Plan(query=query, entry=entry, groups=((),), domains=(), arguments=arguments,
                argument_fixed=fixed, pairs={}, statistics=(), local_sql="",
                row_arguments=rows, row_sql=_row_sql(query, local, fixed, rows))


def _category_code(text: str, schema: Schema, query: Query) -> str:
    """``COUNT``/``COUNT(DISTINCT)`` of a category column: its 1-based position in the
    public domain (NULL stays NULL); other aggregates of text are refused."""
    column: exp.Expr = exp.maybe_parse(text, dialect="duckdb")
    uses = {a.function for a in query.aggregates
            if any(arg.sql(dialect="duckdb") == text for arg in a.arguments)}
    if not isinstance(column, exp.Column) or column.name not in schema or not uses <= {
            "count", "count_distinct"}:
        raise QueryError(f"{text} is not numeric (VARCHAR); aggregates need numbers "
                         "(COUNT and COUNT(DISTINCT) also take category columns)")
    domain = ", ".join("'" + value.replace("'", "''") + "'"
                       for value in schema.column(column.name).domain)
    return f"list_position([{domain}], {text})"


def _domain(expression: exp.Expr, schema: Schema) -> tuple[Any, ...]:
    """The public values a group key can take: a column's public domain, or an
    expression over one column evaluated (in DuckDB) on that column's domain; for
    ``FLOOR(x / width)`` buckets of a bounded column, on the bucket edges."""
    (column_node,) = {c.name.lower(): c for c in expression.find_all(exp.Column)}.values()
    column = schema.column(column_node.name)
    if isinstance(expression, exp.Column):
        values: tuple[Any, ...] = tuple(column.public_domain or ())
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
                       f'{_DUCKDB_TYPES[column.type]})')
    connection.executemany("INSERT INTO domain VALUES (?)", [[c] for c in candidates])
    try:
        rows = connection.execute(f"SELECT DISTINCT {expression.sql(dialect='duckdb')} AS g "
                                  "FROM domain ORDER BY g NULLS LAST").fetchall()
    except duckdb.Error as error:
        raise QueryError(f"GROUP BY {expression.sql(dialect='duckdb')}: "
                         f"{str(error).splitlines()[0]}") from None
    values = tuple(row[0] for row in rows)
    return values + ((None,) if column.nullable and None not in values else ())


def _groups(query: Query, schema: Schema) -> tuple[tuple[Any, ...], tuple[tuple[Any, ...], ...]]:
    domains = tuple(_domain(e, schema) for e in query.group_expressions)
    count = 1
    for domain in domains:
        count *= len(domain)
    if count > MAX_GROUPS:
        raise UnsupportedQuery(f"the group keys span {count:,} public groups; at most "
                               f"{MAX_GROUPS:,} are supported", construct="GROUP BY")
    return domains, tuple(itertools.product(*domains))


def plan_query(sql: str, tables: Mapping[str, TableEntry], *,
               policy: OutputPolicy | None = None) -> Any:
    """Check ``sql`` against the catalog and decide what runs where: a :class:`Plan`,
    or a :class:`~concilium.query.join.JoinPlan` for a join. ``policy``: the output
    policy the plan must be able to enforce (a dominance rule shares the rows of
    summed arguments; a minimum cohort counts the rows at each MIN and MAX)."""
    if join.has_join(sql):
        return join.plan_join(sql, dict(tables))
    return plan_single(sql, tables, policy=policy)


def plan_single(sql: str, tables: Mapping[str, TableEntry], *,
                policy: OutputPolicy | None = None) -> Plan:
    """Plan a query over one table (horizontal partitions)."""
    policy = policy or OutputPolicy()
    dominance = policy.dominance is not None
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
    local: dict[str, int] = {}  # the SQL each owner runs for each argument
    for text, index in arguments.items():
        kind = _duckdb_type(connection, text, where).upper()
        local_text = text
        if kind == "VARCHAR":  # a category counts by its position in the public domain
            local_text = _category_code(text, entry.schema, query)
            kind = "BIGINT"
        if kind.startswith(("DATE", "TIME", "INTERVAL", "BLOB")):
            raise QueryError(f"{text} is not numeric ({kind}); aggregates need numbers")
        fixed.append(not kind.startswith(_INTEGER_TYPES))
        local[local_text] = index
    pairs: dict[tuple[int, int], int] = {}
    for aggregate in query.aggregates:
        if aggregate.function == "corr":
            key = tuple(arguments[a.sql(dialect="duckdb")] for a in aggregate.arguments)
            pairs.setdefault((key[0], key[1]), len(pairs))
    if query.secret_group:
        return _secret_group_plan(query, entry, arguments, local, tuple(fixed))
    statistics = _statistics(query, arguments, tuple(fixed), pairs,
                             extremes=policy.min_cohort > 1)
    row_functions = ROW_FUNCTIONS + (("sum", "avg") if dominance else ())
    rows = tuple(sorted({arguments[a.arguments[0].sql(dialect="duckdb")]
                         for a in query.aggregates if a.function in row_functions}))
    domains, groups = _groups(query, entry.schema)
    return Plan(query=query, entry=entry, groups=groups, domains=domains,
                arguments=arguments, argument_fixed=tuple(fixed), pairs=pairs,
                statistics=statistics, local_sql=_local_sql(query, local, tuple(fixed),
                                                            statistics),
                row_arguments=rows,
                row_sql=_row_sql(query, local, tuple(fixed), rows) if rows else None)


_INT_SENTINEL = float(2**62)
_FIXED_SENTINEL = float(2**31 - 1)


def _statistics(query: Query, arguments: dict[str, int], fixed: tuple[bool, ...],
                pairs: dict[tuple[int, int], int], *, extremes: bool
                ) -> tuple[Statistic, ...]:
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
                if extremes:  # the minimum cohort applies to the rows that hold it
                    add(Statistic(f"lon{i}", f"COUNT(*) FILTER (WHERE a{i} = w_lo{i})", False,
                                  0, f"rows at the local MIN({text})"))
            if function == "max":
                add(Statistic(f"hi{i}", f"MAX(a{i})", kind, -sentinel, f"MAX({text})"))
                if extremes:
                    add(Statistic(f"hin{i}", f"COUNT(*) FILTER (WHERE a{i} = w_hi{i})", False,
                                  0, f"rows at the local MAX({text})"))
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


def _group_columns(query: Query) -> list[str]:
    return [f'({e.sql(dialect="duckdb")}) AS g{k}' for k, e in enumerate(query.group_expressions)]


def _row_sql(query: Query, arguments: dict[str, int], fixed: tuple[bool, ...],
             rows: tuple[int, ...]) -> str:
    """Every row (filtered or not: sizes must not reveal the filter), its group
    keys, whether it passes WHERE, and the row-level arguments."""
    groups = _group_columns(query)
    passes = "1" if query.where is None else (
        f"CASE WHEN ({query.where.sql(dialect='duckdb')}) THEN 1 ELSE 0 END")
    texts = {i: text for text, i in arguments.items()}
    values = [f"CAST(({texts[i]}) AS {'DOUBLE' if fixed[i] else 'BIGINT'}) AS a{i}"
              for i in rows]
    return f"SELECT {', '.join([*groups, f'{passes} AS w', *values])}\nFROM data"


def _local_sql(query: Query, arguments: dict[str, int], fixed: tuple[bool, ...],
               statistics: tuple[Statistic, ...]) -> str:
    keys = [f"g{k}" for k in range(len(query.group_by))]
    groups = _group_columns(query)
    casts = [f"CAST(({text}) AS {'DOUBLE' if fixed[i] else 'BIGINT'}) AS a{i}"
             for text, i in arguments.items()]
    inner = ", ".join(groups + casts) or "1 AS one"
    where = "" if query.where is None else f"\n  WHERE {query.where.sql(dialect='duckdb')}"
    stats = ",\n  ".join(f"{s.sql} AS {s.name}" for s in statistics)
    group_clause = f"\nGROUP BY {', '.join(keys)}" if keys else ""
    select = ", ".join([*keys, stats])
    base = f"(SELECT {inner}\n  FROM data{where}) AS base"
    # each group's local extremes, for the number of rows that hold them
    partition = f"PARTITION BY {', '.join(keys)}" if keys else ""
    extremes = [f"{kind}(a{s.name[3:]}) OVER ({partition}) AS w_{s.name[:2]}{s.name[3:]}"
                for s, kind in ((s, "MIN" if s.name.startswith("lon") else "MAX")
                                for s in statistics if s.name.startswith(("lon", "hin")))]
    if extremes:
        base = f"(SELECT *, {', '.join(extremes)}\n  FROM {base}) AS windowed"
    return f"SELECT {select}\nFROM {base}{group_clause}"
