"""Planning aggregates of one table (the *partial aggregates* and *row statistics*
plan kinds of :mod:`concilium.query.aggregate_plan`): what is public about each
argument (its bounds, decimals and domain, checked in an empty DuckDB table of
the schema), the partial statistics each owner computes, the SQL it runs for
them (and for its rows, when rows are shared), the formats of the results,
and, under ``dp``, the noise of every statistic.
"""

from __future__ import annotations

import duckdb
from sqlglot import exp

from concilium.data.schema import ColumnType, Schema
from concilium.errors import PolicyViolation, QueryError, UnsupportedQuery
from concilium.governance.policy import OutputPolicy
from concilium.query.aggregate_plan import AggregatePlan
from concilium.query.aggregates import BY_NAME, ROWS_KEY
from concilium.query.catalog import TableEntry
from concilium.query.finish import Format
from concilium.query.groups import DUCKDB_TYPES, group_grid
from concilium.query.privacy import (
    noise_plan,
)
from concilium.query.sql import Query
from concilium.query.statistics import (
    WIDE_LIMIT,
    ArgumentRange,
    Statistic,
    StatisticKey,
    check_range,
)

__all__ = ["analyze_arguments", "formats_of", "plan_aggregates", "row_sql"]

_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "BOOLEAN", "UTINYINT",
                  "USMALLINT", "UINTEGER", "UBIGINT")
_VARIANCES = ("var_samp", "var_pop", "stddev_samp", "stddev_pop")


def analyze_arguments(query: Query, entry: TableEntry
                      ) -> tuple[dict[str, int], tuple[ArgumentRange, ...], dict[str, int]]:
    """The aggregates' arguments: their indices, what is public about each, and the
    SQL each owner runs for each (category columns as domain positions)."""
    connection = duckdb.connect()
    _empty_table(connection, entry.schema)
    where = "" if query.where is None else f" WHERE {query.where.sql(dialect='duckdb')}"
    _duckdb_type(connection, "1", where)  # checks the filter
    arguments: dict[str, int] = {}
    for aggregate in query.aggregates:
        for argument in aggregate.arguments:
            arguments.setdefault(argument.sql(dialect="duckdb"), len(arguments))
    ranges = []
    local: dict[str, int] = {}
    rows = entry.schema.rows_bound * len(entry.owners)
    for text in arguments:
        kind = _duckdb_type(connection, text, where).upper()
        local_text = text
        if kind == "VARCHAR":  # a category counts by its position in the public domain
            local_text = _category_code(text, entry.schema, query)
            kind = "BIGINT"
        if kind.startswith(("DATE", "TIME", "INTERVAL", "BLOB")):
            raise QueryError(f"{text} is not numeric ({kind}); aggregates need numbers")
        ranges.append(_argument_range(text, kind.startswith(_INTEGER_TYPES), entry.schema,
                                      rows))
        local[local_text] = arguments[text]
    return arguments, tuple(ranges), local


def plan_aggregates(query: Query, entry: TableEntry, policy: OutputPolicy) -> AggregatePlan:
    """Plan an aggregate query over one table (horizontal partitions)."""
    arguments, ranges, local = analyze_arguments(query, entry)
    statistics = _statistics(query, arguments, ranges, policy)
    dominance = policy.dominance is not None
    row_functions = ("quantile", "count_distinct") + (("sum", "avg") if dominance else ())
    shared = tuple(sorted({arguments[a.arguments[0].sql(dialect="duckdb")]
                           for a in query.aggregates if a.function in row_functions}))
    domains, groups = group_grid(query.group_expressions, entry.schema)
    fixed = tuple(not r.integral for r in ranges)
    noise = None
    if policy.dp_rho is not None:
        if shared:
            raise PolicyViolation("under dp, only COUNT, SUM and AVG are released with noise; "
                                  "this query shares rows (quantiles, distinct counts or a "
                                  "dominance rule) and is refused")
        never_null = frozenset(i for text, i in arguments.items() if text in entry.schema
                               and not entry.schema.column(text).nullable)
        noise = noise_plan(query, statistics, {i: r.bound for i, r in enumerate(ranges)},
                           policy.dp_rho, policy.dp_mechanism, never_null)
    return AggregatePlan(noise=noise, min_difference=policy.min_difference, query=query,
                         entry=entry, groups=groups, domains=domains,
                         arguments=arguments, ranges=ranges, statistics=statistics,
                         local_sql=_local_sql(query, local, ranges, statistics),
                         formats=formats_of(query, arguments, ranges),
                         row_arguments=shared,
                         row_sql=row_sql(query, local, fixed, shared) if shared else None)


def _argument_range(text: str, integral: bool, schema: Schema, rows: int) -> ArgumentRange:
    """What is public about an argument: a plain column's bound, decimals and
    domain; nothing for other expressions (their owners' values are checked)."""
    node: exp.Expr = exp.maybe_parse(text, dialect="duckdb")
    if isinstance(node, exp.Column) and node.name in schema:
        column = schema.column(node.name)
        categories = column.domain if column.type is ColumnType.CATEGORY else None
        return ArgumentRange(text, integral, column.bound, column.decimals, rows, categories)
    return ArgumentRange(text, integral, None, None, rows)


def _statistics(query: Query, arguments: dict[str, int], ranges: tuple[ArgumentRange, ...],
                policy: OutputPolicy) -> tuple[Statistic, ...]:
    needed: dict[StatisticKey, Statistic] = {ROWS_KEY: Statistic(ROWS_KEY, "COUNT(*)",
                                                                 "integer", 0, "row count")}
    for aggregate in query.aggregates:
        spec = BY_NAME[aggregate.function]
        indices = tuple(arguments[a.sql(dialect="duckdb")] for a in aggregate.arguments)
        if aggregate.function in ("sum", "avg", *_VARIANCES):
            check_range(ranges[indices[0]], aggregate.function.upper())
        if aggregate.function in _VARIANCES:
            bound = ranges[indices[0]].bound
            if bound is not None and (2 * bound) ** 2 >= WIDE_LIMIT:
                raise UnsupportedQuery(f"{aggregate.sql} could reach {(2 * bound) ** 2:.3g}, "
                                       "beyond what a secret value can hold; state a smaller "
                                       "bound", construct=aggregate.sql)
        if aggregate.function in ("covar_pop", "covar_samp"):
            by, bx = (ranges[k].bound for k in indices)
            if bx is not None and by is not None and bx * by >= WIDE_LIMIT:
                raise UnsupportedQuery(f"{aggregate.sql} could reach {bx * by:.3g}, beyond "
                                       "what a secret value can hold; state smaller bounds",
                                       construct=aggregate.sql)
        if aggregate.function == "mode" and ranges[indices[0]].categories is None:
            raise UnsupportedQuery(f"{aggregate.sql}: MODE takes a category column",
                                   construct=aggregate.sql)
        if spec.needs is None:
            continue
        for statistic in spec.needs(indices, lambda i: ranges[i]):
            if statistic.key.kind in ("min_rows", "max_rows") and policy.min_cohort <= 1:
                continue  # only a minimum cohort counts the rows at an extreme
            needed.setdefault(statistic.key, statistic)
    return tuple(needed.values())


def formats_of(query: Query, arguments: dict[str, int], ranges: tuple[ArgumentRange, ...]
               ) -> dict[str, Format]:
    """How each aggregate's opened value is presented (decimals, category names)."""
    formats = {}
    for aggregate in query.aggregates:
        if not aggregate.arguments:
            continue
        argument = ranges[arguments[aggregate.arguments[0].sql(dialect="duckdb")]]
        if aggregate.function == "mode":
            formats[aggregate.sql] = Format(categories=argument.categories)
        elif aggregate.function in ("sum", "min", "max") and argument.decimals is not None:
            formats[aggregate.sql] = Format(decimals=argument.decimals)
    return formats


def _empty_table(connection: duckdb.DuckDBPyConnection, schema: Schema) -> None:
    columns = ", ".join(f'"{c.name}" {DUCKDB_TYPES[c.type]}' for c in schema.columns)
    connection.execute(f"CREATE TABLE data ({columns})")


def _duckdb_type(connection: duckdb.DuckDBPyConnection, expression: str, where: str) -> str:
    try:
        rows = connection.execute(f"DESCRIBE SELECT {expression} AS value FROM data{where}"
                                  ).fetchall()
    except duckdb.Error as error:
        raise QueryError(f"{expression}: {str(error).splitlines()[0]}") from None
    return str(rows[0][1])


def _category_code(text: str, schema: Schema, query: Query) -> str:
    """``COUNT``/``COUNT(DISTINCT)``/``MODE`` of a category column: its 1-based position
    in the public domain (NULL stays NULL); other aggregates of text are refused."""
    column: exp.Expr = exp.maybe_parse(text, dialect="duckdb")
    uses = {a.function for a in query.aggregates
            if any(arg.sql(dialect="duckdb") == text for arg in a.arguments)}
    if not isinstance(column, exp.Column) or column.name not in schema or not uses <= {
            "count", "count_distinct", "mode"}:
        raise QueryError(f"{text} is not numeric (VARCHAR); aggregates need numbers "
                         "(COUNT, COUNT(DISTINCT) and MODE also take category columns)")
    domain = ", ".join("'" + value.replace("'", "''") + "'"
                       for value in schema.column(column.name).domain)
    return f"list_position([{domain}], {text})"


def _group_columns(query: Query) -> list[str]:
    return [f'({e.sql(dialect="duckdb")}) AS g{k}' for k, e in enumerate(query.group_expressions)]


def row_sql(query: Query, arguments: dict[str, int], fixed: tuple[bool, ...],
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


def _local_sql(query: Query, arguments: dict[str, int], ranges: tuple[ArgumentRange, ...],
               statistics: tuple[Statistic, ...]) -> str:
    keys = [f"g{k}" for k in range(len(query.group_by))]
    groups = _group_columns(query)
    casts = [f"CAST(({text}) AS {'BIGINT' if ranges[i].integral else 'DOUBLE'}) AS a{i}"
             for text, i in arguments.items()]
    inner = ", ".join(groups + casts) or "1 AS one"
    where = "" if query.where is None else f"\n  WHERE {query.where.sql(dialect='duckdb')}"
    stats = ",\n  ".join(f"{s.sql} AS {s.name}" for s in statistics)
    group_clause = f"\nGROUP BY {', '.join(keys)}" if keys else ""
    select = ", ".join([*keys, stats])
    base = f"(SELECT {inner}\n  FROM data{where}) AS base"
    # each group's local extremes, for the number of rows that hold them
    partition = f"PARTITION BY {', '.join(keys)}" if keys else ""
    extremes = [f"{s.key.kind[:3].upper()}(a{s.key.arguments[0]}) OVER ({partition}) AS "
                f"w_{s.key.kind[:3]}_{s.key.arguments[0]}"
                for s in statistics if s.key.kind in ("min_rows", "max_rows")]
    if extremes:
        base = f"(SELECT *, {', '.join(extremes)}\n  FROM {base}) AS windowed"
    return f"SELECT {select}\nFROM {base}{group_clause}"


