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

The plan is made by :mod:`~concilium.query.aggregate_planning`; this module
holds the plan, what owners compute and share for it, and its secure part.

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

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from sqlglot import exp

from concilium.data.dataset import Dataset
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import QueryError
from concilium.governance.policy import OutputPolicy
from concilium.query import rows as rows_module
from concilium.query.aggregates import BY_NAME, PARTIAL, ROWS, ROWS_KEY, count_of
from concilium.query.catalog import TableEntry
from concilium.query.differencing import check_difference, difference_inputs, predicate_of
from concilium.query.expressions import GROUP_SQL
from concilium.query.finish import Format, Outcome, finish
from concilium.query.local import run_local
from concilium.query.partials import Combined
from concilium.query.plans import QueryPlan
from concilium.query.privacy import (
    NoisePlan,
    add_noise,
    average_counts,
    floor_to_grid,
)
from concilium.query.sql import Aggregate, Query
from concilium.query.statistics import (
    NARROW_LIMIT,
    ArgumentRange,
    Statistic,
    StatisticKey,
    to_ring,
)

__all__ = ["AggregatePlan", "local_statistics"]



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
            yield from difference_inputs(predicate_of(self.query), dataset)
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
            check_difference(session, predicate_of(self.query), self.entry.owners, dataset,
                             self.min_difference)
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
