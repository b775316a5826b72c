"""Aggregates of one table held in horizontal partitions: the *partial aggregates*
and *row statistics* plan kinds.

Every row lives at one owner, so the ``WHERE`` filter and the per-group
partial statistics (the registry's :mod:`~concilium.query.aggregates` say which)
are computed by each owner alone, in DuckDB, over the *whole public domain* of
the group columns: every owner shares the same number of values whatever its
data, so sizes reveal nothing. The secure part combines them
(:mod:`~concilium.query.partials`) and finishes each aggregate. Quantiles,
distinct counts and the dominance rule need the rows themselves: each owner
then also shares all its rows (the *row statistics* kind), with secret flags,
and the compute parties sort them securely (:mod:`~concilium.query.rows`).

Values are encoded from public bounds (:mod:`~concilium.query.statistics`):
exact integers, fixed point, or wide fixed point for sums, with a prescale for
second moments, so that money columns summed over millions of rows fit.

Reveals (to every compute party): which groups of the public domain appear in
the result (non-empty groups that pass ``HAVING``); to the recipients: the
selected values of those groups, and which of them are SQL NULL. Nothing
else: each owner shares the same number of values whatever its data (plus, for
row statistics, each owner's row count).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.compute as pc
from sqlglot import exp

from concilium.data.dataset import Dataset
from concilium.data.schema import ColumnType, Schema
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import PolicyViolation, QueryError, UnsupportedQuery
from concilium.governance.policy import OutputPolicy
from concilium.query import rows as rows_module
from concilium.query.aggregates import BY_NAME, PARTIAL, ROWS, ROWS_KEY, count_of
from concilium.query.catalog import TableEntry
from concilium.query.differencing import check_difference, difference_inputs
from concilium.query.expressions import GROUP_SQL
from concilium.query.finish import Format, Outcome, finish
from concilium.query.groups import DUCKDB_TYPES, group_grid
from concilium.query.local import run_local
from concilium.query.partials import Combined
from concilium.query.plans import QueryPlan
from concilium.query.privacy import (
    NoisePlan,
    add_noise,
    average_counts,
    floor_to_grid,
    noise_plan,
)
from concilium.query.sql import Aggregate, Query
from concilium.query.statistics import (
    NARROW_LIMIT,
    WIDE_LIMIT,
    ArgumentRange,
    Statistic,
    StatisticKey,
    check_range,
    to_ring,
)

__all__ = ["AggregatePlan", "analyze_arguments", "formats_of", "local_statistics",
           "plan_aggregates", "row_sql"]

_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "BOOLEAN", "UTINYINT",
                  "USMALLINT", "UINTEGER", "UBIGINT")
_VARIANCES = ("var_samp", "var_pop", "stddev_samp", "stddev_pop")


@dataclass(frozen=True)
class AggregatePlan(QueryPlan):
    """How an aggregate query over one table runs."""

    query: Query
    entry: TableEntry
    groups: tuple[tuple[Any, ...], ...]
    domains: tuple[tuple[Any, ...], ...]
    arguments: dict[str, int]  # aggregate argument SQL -> index
    ranges: tuple[ArgumentRange, ...]
    statistics: tuple[Statistic, ...]
    local_sql: str
    formats: dict[str, Format]
    row_arguments: tuple[int, ...] = ()  # arguments whose rows are shared
    row_sql: str | None = None  # the owners' row query for them
    noise: NoisePlan | None = None  # under dp: the noise of each statistic
    min_difference: int = 0  # the differencing check's k (0: no check)

    @property
    def kind(self) -> str:
        return ROWS if self.row_arguments else PARTIAL

    @property
    def tables(self) -> Mapping[str, TableEntry]:
        return {self.query.table: self.entry}

    @property
    def shares_rows(self) -> bool:
        return bool(self.row_arguments)

    @property
    def argument_fixed(self) -> tuple[bool, ...]:
        return tuple(not r.integral for r in self.ranges)

    def columns(self) -> set[str]:
        query = self.query
        nodes: list[exp.Expr] = [node for node, _ in query.select]
        nodes += [n for n in (query.where, query.having) if n is not None]
        nodes += list(query.group_expressions)
        for aggregate in query.aggregates:
            nodes += list(aggregate.arguments)
        names = {c.name.lower() for node in nodes for c in node.find_all(exp.Column)}
        output_names = {name.lower() for _, name in query.select}
        return names - (output_names - names)

    # -- owners' side ------------------------------------------------------------------
    def local_inputs(self, datasets: Mapping[str, Dataset], party: int
                     ) -> Iterator[tuple[np.ndarray, bool]]:
        if party not in self.entry.owners:
            return
        dataset = _dataset(party, datasets, self.query.table)
        if self.min_difference:
            yield from difference_inputs(self, dataset)
        integers, reals = local_statistics(self, dataset)
        yield integers, False
        if self.fixed_statistics:
            yield reals, True
        if self.row_arguments:
            flags, values = rows_module.local_rows(self, dataset)
            yield flags, False
            yield from zip(values, [self.argument_fixed[i] for i in self.row_arguments],
                           strict=True)

    @property
    def fixed_statistics(self) -> tuple[Statistic, ...]:
        return tuple(s for s in self.statistics if s.encoding == "fixed")

    @property
    def integer_statistics(self) -> tuple[Statistic, ...]:
        """Shared as ring integers: counts, integer sums and extremes, wide sums."""
        return tuple(s for s in self.statistics if s.encoding != "fixed")

    # -- compute parties ---------------------------------------------------------------
    def run(self, session: Session, datasets: Mapping[str, Dataset],
            to: Sequence[int] | None, policy: OutputPolicy) -> pd.DataFrame | None:
        dataset = datasets.get(self.query.table)
        if self.min_difference:
            check_difference(session, self, self.entry.owners, dataset, self.min_difference)
        combined = Combined(session, self.ranges, _input_statistics(session, self, dataset))
        if self.noise is not None:  # from here on, every statistic is noisy
            totals = {s.key: combined.total(s.key) for s in self.noise.statistics}
            totals.update({alias: combined.total(alias) for alias, _ in self.noise.aliases})
            add_noise(session, self.noise, totals, len(self.entry.owners))
            combined.cache.update(totals)
        shared = (rows_module.input_rows(session, self, dataset) if self.row_arguments
                  else None)
        ordered: dict[int, rows_module.SortedRows] = {}
        values: dict[str, SecretArray] = {}
        conditions: dict[str, tuple[Any, ...]] = {}
        flags: dict[str, tuple[SecretArray, ...]] = {}
        for aggregate in self.query.aggregates:
            indices = tuple(self.arguments[a.sql(dialect="duckdb")]
                            for a in aggregate.arguments)
            spec = BY_NAME[aggregate.function]
            if spec.rows:
                assert shared is not None
                i = indices[0]
                if i not in ordered:
                    ordered[i] = rows_module.sorted_values(shared, len(self.groups), i)
                count = combined.total(count_of(i))
                if aggregate.function == "count_distinct":
                    values[aggregate.sql] = rows_module.count_distinct(ordered[i], count)
                    conditions[aggregate.sql] = ()
                else:
                    assert aggregate.fraction is not None
                    values[aggregate.sql] = rows_module.quantile(ordered[i].values, count,
                                                                 aggregate.fraction)
                    conditions[aggregate.sql] = ((count_of(i), 1),)
                flags[aggregate.sql] = ()
                continue
            assert spec.finish is not None
            finished = spec.finish(combined, indices)
            values[aggregate.sql] = finished.value
            conditions[aggregate.sql] = finished.at_least
            flags[aggregate.sql] = finished.flags
        grouped = bool(self.query.group_by)
        needed = sorted({c for cs in conditions.values() for c in cs}
                        | ({(ROWS_KEY, 1)} if grouped else set()),
                        key=lambda c: (c[0].alias, c[1]))
        bits: dict[tuple[StatisticKey, int], SecretArray] = {}
        if needed:
            stacked = SecretArray.stack([combined.total(key) for key, _ in needed])
            thresholds = np.array([minimum for _, minimum in needed])[:, None]
            tests = stacked >= thresholds
            bits = {condition: tests[k] for k, condition in enumerate(needed)}
        defined: dict[str, Any] = {}
        for text in values:
            parts = [bits[c] for c in conditions[text]] + list(flags[text])
            result: Any = True
            for part in parts:
                result = part if result is True else result * part
            defined[text] = result
        context = _RuleContext(self, combined, shared, ordered)
        outcome = Outcome(values, defined, self._group_columns(),
                          # under dp every public group appears, empty or not
                          bits[(ROWS_KEY, 1)] if grouped and self.noise is None else True,
                          self.formats,
                          {} if self.noise is None else average_counts(self, values,
                                                                       combined.total))
        return finish(session, self, outcome, context, to, policy)

    def _group_columns(self) -> dict[str, np.ndarray]:
        columns = {name.lower(): np.array([g[k] for g in self.groups], dtype=object)
                   for k, name in enumerate(self.query.group_by)}
        for k, expression in enumerate(self.query.group_expressions):
            columns[GROUP_SQL + expression.sql(dialect="duckdb")] = np.array(
                [g[k] for g in self.groups], dtype=object)
        return columns

    # -- explanation ----------------------------------------------------------------
    def explain(self, who: Callable[[int], str], recipients: Sequence[int] | None) -> str:
        query = self.query
        owners = ", ".join(who(p) for p in self.entry.owners)
        groups = len(self.groups)
        group_text = (f"the {groups} public groups of {', '.join(query.group_by)}"
                      if query.group_by else "the whole table (one group)")
        shared = "\n".join(f"     - {s.description}" for s in self.statistics)
        if self.row_sql:
            shared += ("\n     - and every row (filtered or not) of the arguments of MEDIAN, "
                       "PERCENTILE_CONT and COUNT(DISTINCT) (and of sums, under a dominance "
                       "rule), with secret flags and group codes:\n"
                       + textwrap.indent(self.row_sql, "         ")
                       + "\n       (each owner's row count is revealed; the rows are sorted "
                       "securely)")
        finish_text = "\n".join(f"     - {a.sql}: {self._method(a)}" for a in query.aggregates)
        having = ("" if query.having is None else
                  f"\n     - HAVING {query.having.sql(dialect='duckdb')}: secure comparisons")
        appear = ("which of the groups appear in the result (non-empty"
                  f"{' and passing HAVING' if query.having is not None else ''})"
                  if query.group_by or query.having is not None else "nothing (one result "
                                                                      "row)")
        if self.noise is not None:  # under dp every public group appears
            appear = ("which groups pass HAVING, on noisy values" if query.having is not None
                      else "nothing (every public group appears)")
        to = ("every compute party" if recipients is None
              else ", ".join(who(p) for p in recipients))
        outputs = ", ".join(name for _, name in query.select)
        local = textwrap.indent(self.local_sql, "       ")
        count = len(self.statistics) * groups
        step_2 = textwrap.fill(
            f"2. Shared by each owner as secret shares with the compute parties: "
            f"{len(self.statistics)} statistics for each of {group_text}, {count} values per "
            "owner whatever its data:", width=88, subsequent_indent="   ")
        return f"""Query
  {query.sql.strip()}

1. Locally, at each owner of {query.table} ({owners}), in DuckDB; nothing leaves the owner:
{local}

{step_2}
{shared}

3. Computed on secret shares by the compute parties:
{finish_text}{having}

4. Revealed
     - to every compute party: {appear}
     - to {to}: the selected columns ({outputs}) for those groups, and which of them are NULL
{self._noise_text()}"""

    def _noise_text(self) -> str:
        if self.noise is None:
            return ""
        return ("\n5. Differential privacy: every statistic is noised on shares before step 3\n"
                + textwrap.indent(self.noise.describe(), "     ") + "\n     (each released "
                "value comes with its 95% interval; an average with its noisy count)\n")

    def _method(self, aggregate: Aggregate) -> str:
        """How an aggregate is finished, for this plan's bounds."""
        method = BY_NAME[aggregate.function].explain
        if aggregate.function not in ("avg", "var_samp", "var_pop", "stddev_samp",
                                      "stddev_pop") or not aggregate.arguments:
            return method
        argument = self.ranges[self.arguments[aggregate.arguments[0].sql(dialect="duckdb")]]
        if aggregate.function == "avg":
            if argument.bound is not None and argument.bound * argument.rows >= NARROW_LIMIT:
                return (f"sum / count by exact long division (the sum can reach "
                        f"{argument.bound * argument.rows:.3g}, beyond the fixed-point "
                        "division's range)")
            return "sum / count (secure fixed-point division)"
        shift = argument.moment_shift
        return method + (f"; squared deviations shared / 4^{shift} to fit" if shift else "")


def _dataset(party: int, datasets: Mapping[str, Dataset], table: str) -> Dataset:
    if table not in datasets:
        raise QueryError(f"party {party} owns part of {table!r} but has no dataset for it")
    return datasets[table]


@dataclass
class _RuleContext:
    """What the output policy's rules need, from the combined statistics and rows."""

    plan: AggregatePlan
    combined: Combined
    shared: rows_module.RowData | None
    ordered: dict[int, rows_module.SortedRows]

    def cohort(self) -> SecretArray:
        return self.combined.rows()

    def _index(self, aggregate: Any) -> int:
        return self.plan.arguments[aggregate.arguments[0].sql(dialect="duckdb")]

    def extreme_rows(self, aggregate: Any) -> SecretArray:
        return self.combined.extreme_rows(aggregate.function, self._index(aggregate))

    def dominance(self, aggregate: Any, n: int) -> tuple[SecretArray, SecretArray]:
        i = self._index(aggregate)
        if self.shared is None:
            raise QueryError("the plan shares no rows for the dominance rule")
        if i not in self.ordered:
            self.ordered[i] = rows_module.sorted_values(self.shared, len(self.plan.groups), i)
        top = rows_module.largest(self.ordered[i], self.combined.total(count_of(i)), n)
        whole = self.combined.total(StatisticKey("sum", (i,)))
        if whole.fractional_bits != top.fractional_bits:
            whole = whole.as_fixed()
        return top, whole


# -- planning ----------------------------------------------------------------------------
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


# -- owners' statistics --------------------------------------------------------------
def local_statistics(plan: AggregatePlan, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The owner's partial statistics over the public group domain, computed alone in
    DuckDB: (ring integers, reals), each of shape (statistics, groups)."""
    table = run_local(plan.local_sql, dataset)
    index = {group: i for i, group in enumerate(plan.groups)}
    keys = range(len(plan.query.group_by))
    group_rows = list(zip(*(table.column(f"g{k}").to_pylist() for k in keys),
                          strict=True)) if plan.query.group_by else [()] * table.num_rows
    positions = np.array([index[tuple(g)] for g in group_rows], dtype=np.intp)
    count = len(plan.groups)
    integers = np.zeros((len(plan.integer_statistics), count), dtype=object)
    for k, statistic in enumerate(plan.integer_statistics):
        integers[k] = int(statistic.empty) if statistic.encoding != "wide" else 0
        column = table.column(statistic.name).to_pylist()
        if statistic.encoding == "wide":
            integers[k, positions] = [to_ring(v, statistic) for v in column]
        else:
            integers[k, positions] = [int(statistic.empty) if v is None else int(v)
                                      for v in column]
        if plan.noise is not None:  # under dp: floored to the noise's grid, here
            integers[k] = floor_to_grid(integers[k], plan.noise.grid_bits(statistic.key))
    reals = np.empty((len(plan.fixed_statistics), count), dtype=np.float64)
    for k, statistic in enumerate(plan.fixed_statistics):
        reals[k] = statistic.empty
        column = pc.fill_null(table.column(statistic.name), statistic.empty)
        values = np.asarray(column.to_numpy(), dtype=np.float64)
        reals[k, positions] = np.where(np.isnan(values), statistic.empty, values)
    return integers, reals


def _input_statistics(session: Session, plan: AggregatePlan, dataset: Dataset | None
                      ) -> dict[StatisticKey, list[SecretArray]]:
    """Every owner's statistics, secret-shared (in owner order)."""
    shares: dict[StatisticKey, list[SecretArray]] = {s.key: [] for s in plan.statistics}
    bits = session.codec.fractional_bits
    for owner in plan.entry.owners:
        mine = session.party == owner
        if mine and dataset is None:
            raise QueryError(f"party {owner} owns part of {plan.query.table!r} but has no "
                             "dataset for it")
        local = local_statistics(plan, dataset) if mine and dataset is not None else None
        integers = session.input(owner, local[0] if local else None)
        for k, statistic in enumerate(plan.integer_statistics):
            value = integers[k]
            if statistic.encoding == "wide":  # ring integers in 2^-16 units
                value = SecretArray(session, value.shares, bits)
            shares[statistic.key].append(value)
        if plan.fixed_statistics:
            reals = session.input(owner, local[1] if local else None, fixed=True)
            for k, statistic in enumerate(plan.fixed_statistics):
                shares[statistic.key].append(reals[k])
    return shares
