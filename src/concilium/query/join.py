"""Joins of different owners' tables on a secret key: the *join* plan kind.

Two or more tables joined on one key, ``INNER`` (any multiplicity: one-to-one,
one-to-many, many-to-many) or a ``LEFT JOIN`` of two tables, optionally grouped
by public-domain columns of any table (planned by
:mod:`concilium.query.join_planning`). Nothing here reveals which rows match.

Protocol (a sort-based join, as in the join and group-by operators of
Jonsson, Kreitz and Uddin, "Secure Multi-Party Sorting and Applications",
2011, generalized to per-key totals):

1. Every owner shares *all* rows of its table: the key, 0/1 flags (the key is
   not NULL; the row passes its table's ``WHERE``; each argument is not NULL),
   one-hot indicators of its rows' groups, and the aggregate arguments.
2. Per row, on shares: its weight in each group part of its table, and its
   weighted counts and sums (one multiplication round).
3. The rows of all tables are sorted together by key
   (:mod:`concilium.ops.sort`: shuffle, then opened comparisons of distinct,
   shuffled rows); a segmented scan (:func:`concilium.ops.sort.segmented_scan`)
   totals each key's rows per table and group part, so a key's last row holds
   them (a key starts where the key changes: secure equality).
4. A key contributes to the join the product of its tables' counts (for a
   ``LEFT JOIN``, the left rows times ``max(1, right rows)``): ``COUNT(*)`` sums
   those products over the keys, a ``SUM`` over a table's column sums the key's
   total of that column times the other tables' counts, ``AVG`` divides;
   ``MIN``/``MAX`` run a segmented extreme (:mod:`concilium.ops.scan`) and keep
   the keys that match. ``COUNT(DISTINCT)``, the extremes rule and the dominance
   rule spread each key's multiplicity back to its rows (a reversed scan) and
   work on those rows (:mod:`concilium.query.rows`).

Reveals: the number of rows of each table (the sizes of the shared columns),
what the sort reveals (nothing about the data), which groups appear, and the
query's result.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlglot import exp

from concilium.data.dataset import Dataset
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import QueryError
from concilium.governance.policy import OutputPolicy
from concilium.ops import sort as sorting
from concilium.ops.scan import segmented_extreme
from concilium.query import rows as rows_module
from concilium.query.aggregates import JOIN
from concilium.query.catalog import TableEntry
from concilium.query.expressions import GROUP_SQL
from concilium.query.finish import Format, Outcome, finish
from concilium.query.join_side import KEY_LIMIT, Side, local_side_rows
from concilium.query.local import share_rows
from concilium.query.partials import mean_of
from concilium.query.plans import QueryPlan
from concilium.query.sql import Query
from concilium.query.statistics import NARROW_LIMIT

__all__ = ["KEY_LIMIT", "MAX_JOIN_GROUPS", "JoinPlan", "Side", "local_side_rows"]


MAX_JOIN_GROUPS = 256
_INT_SENTINEL = 2**62
_FIXED_SENTINEL = float(2**31 - 1)


@dataclass(frozen=True)
class JoinPlan(QueryPlan):
    """How a join query runs."""

    query: Query
    sides: tuple[Side, ...]
    left: bool  # a LEFT JOIN of sides[0] with sides[1]
    argument_side: dict[str, tuple[int, int]]  # aggregate argument -> (side, index)
    domains: tuple[tuple[Any, ...], ...] = ()
    groups: tuple[tuple[Any, ...], ...] = ((),)

    @property
    def kind(self) -> str:
        return JOIN

    @property
    def tables(self) -> Mapping[str, TableEntry]:
        return {side.table: side.entry for side in self.sides}

    @property
    def shares_rows(self) -> bool:
        return True

    def columns(self) -> set[str]:
        query = self.query
        nodes: list[exp.Expr] = [node for node, _ in query.select]
        nodes += [n for n in (query.having,) if n is not None]
        nodes += list(query.group_expressions)
        for aggregate in query.aggregates:
            nodes += list(aggregate.arguments)
        names = {c.name.lower() for node in nodes for c in node.find_all(exp.Column)}
        for side in self.sides:
            names.add(side.key.lower())
            if side.where is not None:
                names |= {c.name.lower() for c in side.where.find_all(exp.Column)}
        return names

    def groups_own(self, side: int) -> bool:
        """Whether only side ``side``'s columns group the join (each of its rows is then
        in at most one group)."""
        return all(not s.group_keys for k, s in enumerate(self.sides) if k != side)

    def local_inputs(self, datasets: Mapping[str, Dataset], party: int
                     ) -> Iterator[tuple[np.ndarray, bool]]:
        for side in self.sides:
            if party in side.entry.owners:
                if side.table not in datasets:
                    raise QueryError(f"party {party} owns part of {side.table!r} but has no "
                                     "dataset for it")
                flags, values = local_side_rows(side, datasets[side.table])
                yield flags, False
                yield from zip(values, side.fixed, strict=True)

    def run(self, session: Session, datasets: Mapping[str, Dataset],
            to: Sequence[int] | None, policy: OutputPolicy) -> pd.DataFrame | None:
        joined = _Joined.build(session, self, datasets)
        outcome, context = joined.aggregates(policy)
        return finish(session, self, outcome, context, to, policy)

    def explain(self, who: Callable[[int], str], recipients: Sequence[int] | None) -> str:
        query = self.query
        sides = []
        for side in self.sides:
            owners = ", ".join(who(p) for p in side.entry.owners)
            unique = "key unique; " if side.entry.schema.column(side.key).unique else ""
            local = textwrap.indent(side.local_sql(), "       ")
            sides.append(f"   {side.table} AS {side.alias} ({unique}owners {owners}):\n{local}")
        to = ("every compute party" if recipients is None
              else ", ".join(who(p) for p in recipients))
        finish_text = "\n".join(f"     - {a.sql}" for a in query.aggregates)
        kind = "left" if self.left else "inner"
        grouped, appear = self._grouping_text()
        return f"""Query
  {query.sql.strip()}

1. Locally, at each owner, in DuckDB: every row of its table with its key, whether it
   passes that table's WHERE, its group, and the aggregate arguments; nothing leaves the
   owner yet:
{chr(10).join(sides)}

{_paragraph("2. Shared as secret shares with the compute parties: all of those rows (so "
            "each table's row count is revealed, never how many rows pass the filters or "
            "match).")}

{_paragraph(f"3. Computed on secret shares ({kind} join{grouped}): sort all tables' rows "
            "together by key (a secret shuffle, then comparisons of distinct shuffled rows: "
            "they reveal nothing), total each key's rows per table (a segmented scan), and "
            "multiply the tables' totals per key, then the aggregates:")}
{finish_text}

{_paragraph(f"4. {appear}To {to}: the selected columns "
            f"({', '.join(n for _, n in query.select)}) and which of them are NULL.")}
"""


    def _grouping_text(self) -> tuple[str, str]:
        """How the explanation words the grouping, and what it reveals."""
        query = self.query
        grouped = (f" per group of {', '.join(query.group_by)} ({len(self.groups)} public "
                   "groups)" if query.group_by else "")
        having = " passing HAVING" if query.having is not None else ""
        appear = (f"Revealed to every compute party: which of the {len(self.groups)} public "
                  f"groups appear (have a joined row{having}). " if query.group_by else (
                      "Revealed to every compute party: whether the result passes HAVING. "
                      if query.having is not None else ""))
        return grouped, appear


def _paragraph(text: str) -> str:
    return textwrap.fill(text, width=88, subsequent_indent="   ")


@dataclass
class _Joined:
    """All tables' rows sorted by key, with per-key totals."""

    session: Session
    plan: JoinPlan
    ends: SecretArray  # 1 on each key's last row
    starts: SecretArray
    counts: list[SecretArray]  # per side: (parts, n) rows per group part at key ends
    present: list[SecretArray]  # per side: (arguments, parts, n) non-NULL counts at ends
    sums: list[SecretArray]  # per side: (arguments, parts, n) sums at ends
    rows: list[SecretArray]  # per side: (parts, n) weighted rows (sorted, not totalled)
    flags: list[SecretArray]  # per side: (arguments, parts, n) weighted present flags
    values: list[SecretArray]  # per side: (arguments, n) values (sorted)
    secret_keys: dict[int, SecretArray]  # per side with a secret group key: (n,) (sorted)

    @classmethod
    def build(cls, session: Session, plan: JoinPlan, datasets: Mapping[str, Dataset]
              ) -> _Joined:
        shared = []
        for side in plan.sides:
            dataset = datasets.get(side.table)
            produce = None if dataset is None else (
                lambda side=side, dataset=dataset: local_side_rows(side, dataset))
            shared.append(share_rows(session, side.entry.owners, side.table, produce,
                                     side.fixed))
        sizes = [flags.shape[-1] for flags, _ in shared]
        total = sum(sizes)

        def spread(part: SecretArray, k: int) -> SecretArray:
            """A column of side ``k``'s rows, zero on the other sides' rows."""
            pieces = []
            for j in range(len(sizes)):
                if j == k:
                    pieces.append(part)
                else:
                    pieces.append(session.constant(np.zeros(
                        (*part.shape[:-1], sizes[j]), dtype=np.int64)) if not part.is_fixed
                        else session.constant(np.zeros((*part.shape[:-1], sizes[j])),
                                              fixed=True))
            return SecretArray.concatenate(pieces, axis=-1)

        keys = SecretArray.concatenate([flags[0] for flags, _ in shared], axis=-1)
        known = SecretArray.concatenate([flags[1] for flags, _ in shared], axis=-1)
        columns: list[SecretArray] = []
        layout = []
        secret_at: dict[int, int] = {}
        for k, (side, (flags, values)) in enumerate(zip(plan.sides, shared, strict=True)):
            arguments = len(side.arguments)
            weight = flags[2] if (plan.left and k == 0) else flags[2] * flags[1]
            parts = side.grid_size
            groups = flags[3 + arguments:3 + arguments + parts] if side.group_keys else (
                weight.reshape(1, -1) * 0 + 1)
            weighted = groups * weight  # (parts, rows)
            present = (SecretArray.stack([flags[3 + a] for a in range(arguments)])
                       .reshape(arguments, 1, -1) * weighted.reshape(1, parts, -1)
                       if arguments else None)
            sums = (SecretArray.stack([present[a] * values[a] for a in range(arguments)])
                    if present is not None else None)
            start = len(columns)
            columns.append(spread(weighted, k))
            if present is not None and sums is not None:
                columns += [spread(present, k), spread(sums, k),
                            spread(SecretArray.stack(values), k)]
            layout.append((start, arguments))
            if side.secret_key is not None:
                secret_at[k] = len(columns)
                columns.append(spread(flags[flags.shape[0] - 1], k))
        # one sort key, 2 key + (key is NULL): |key| < 2^61 keeps differences in range;
        # the NULL keys' rows (weight 0, or a left row counted once) form one odd "key"
        # that no real key equals
        order = [sorting.SortKey((keys * 2 + (1 - known)).shares)]
        flat = [c.reshape(-1, total) for c in columns]  # one sort column per row of each
        payload = [c.shares[:, r] for c in flat for r in range(c.shape[0])]
        outcome = sorting.sort(session.backend, order, payload)
        moved, taken = [], 0
        for c, column in zip(flat, columns, strict=True):
            rows_of = np.stack(outcome.payload[taken:taken + c.shape[0]], axis=1)
            taken += c.shape[0]
            moved.append(SecretArray(session, rows_of, c.fractional_bits).reshape(column.shape))
        key = SecretArray(session, outcome.keys[0], 0)
        one = session.constant(np.ones(min(total, 1), dtype=np.int64))
        if total > 1:
            same = key[1:] == key[:-1]
            starts = SecretArray.concatenate([one, 1 - same], axis=-1)
        else:
            starts = one
        ends = SecretArray.concatenate([starts[1:], one], axis=-1) if total else one[:0]
        # counts and sums of every side, scanned together (shares: ints and fixed alike)
        summed = [c for start, arguments in layout
                  for c in ([moved[start]] + ([moved[start + 1], moved[start + 2]]
                                              if arguments else []))]
        stacked = np.concatenate([c.reshape(-1, total).shares for c in summed], axis=1)
        totals_shares = (sorting.segmented_scan(session.backend, starts.shares, stacked)[0]
                         if total else stacked)
        totals = SecretArray(session, totals_shares, 0)
        counts, present_totals, sum_totals, rows, flags_sorted, values_sorted = (
            [], [], [], [], [], [])
        row = 0
        for side, (start, arguments) in zip(plan.sides, layout, strict=True):
            parts = side.grid_size
            counts.append(totals[row:row + parts])
            rows.append(moved[start])
            row += parts
            if arguments:
                width = arguments * parts
                present_totals.append(totals[row:row + width].reshape(arguments, parts, -1))
                row += width
                sums_block = SecretArray(session, totals_shares[:, row:row + width],
                                         moved[start + 2].fractional_bits)
                sum_totals.append(sums_block.reshape(arguments, parts, -1))
                row += width
                flags_sorted.append(moved[start + 1])
                values_sorted.append(moved[start + 3])
            else:
                present_totals.append(totals[:0])
                sum_totals.append(totals[:0])
                flags_sorted.append(totals[:0])
                values_sorted.append(totals[:0])
        return cls(session, plan, ends, starts, counts, present_totals, sum_totals, rows,
                   flags_sorted, values_sorted,
                   {k: moved[at] for k, at in secret_at.items()})

    # -- per group of the query ------------------------------------------------------
    def _parts(self, k: int) -> np.ndarray:
        return np.array([self.plan.sides[k].part_of(g) for g in self.plan.groups],
                        dtype=np.intp)

    def _count(self, k: int) -> SecretArray:
        """Side ``k``'s matched rows at each key end, per query group: (groups, n)."""
        return self.counts[k][self._parts(k)]

    def multiplicity(self, k: int) -> SecretArray:
        """Per query group and key end: how many joined rows each matched row of side
        ``k`` stands for (the product of the other sides' counts)."""
        plan = self.plan
        if plan.left:
            other = self._count(1 - k)
            if k == 0:  # unmatched left rows still count once
                return other + (other == 0)
            return other
        result: SecretArray | None = None
        for j in range(len(plan.sides)):
            if j != k:
                result = self._count(j) if result is None else result * self._count(j)
        assert result is not None
        return result

    def joined_rows(self) -> SecretArray:
        return (self._count(0) * self.multiplicity(0) * self.ends).sum(axis=-1)

    def _argument(self, aggregate: Any) -> tuple[int, int]:
        return self.plan.argument_side[aggregate.arguments[0].sql(dialect="duckdb")]

    def aggregates(self, policy: OutputPolicy) -> tuple[Outcome, _JoinRules]:
        values: dict[str, SecretArray] = {}
        defined: dict[str, Any] = {}
        counts_of: dict[tuple[int, int], SecretArray] = {}
        rows = self.joined_rows()
        for aggregate in self.plan.query.aggregates:
            if not aggregate.arguments:
                values[aggregate.sql], defined[aggregate.sql] = rows, True
                continue
            k, a = self._argument(aggregate)
            side = self.plan.sides[k]
            parts = self._parts(k)
            if (k, a) not in counts_of:
                counts_of[(k, a)] = (self.present[k][a][parts] * self.multiplicity(k)
                                     * self.ends).sum(axis=-1)
            count = counts_of[(k, a)]
            if aggregate.function == "count":
                values[aggregate.sql], defined[aggregate.sql] = count, True
                continue
            if aggregate.function == "count_distinct":
                values[aggregate.sql] = self._distinct(k, a)
                defined[aggregate.sql] = True
                continue
            defined[aggregate.sql] = count >= 1
            total = (self.sums[k][a][parts] * self.multiplicity(k) * self.ends).sum(axis=-1)
            if aggregate.function == "sum":
                values[aggregate.sql] = total
            elif aggregate.function == "avg":
                values[aggregate.sql] = mean_of(total, count, side.ranges[a])
            else:
                values[aggregate.sql] = self._extreme(aggregate.function, k, a)
        include = rows >= 1 if self.plan.query.group_by else True
        columns = self._group_columns()
        formats = {a.sql: Format(decimals=self.plan.sides[self._argument(a)[0]].ranges[
            self._argument(a)[1]].decimals) for a in self.plan.query.aggregates
            if a.arguments and a.function in ("sum", "min", "max")}
        return (Outcome(values, defined, columns, include, formats),
                _JoinRules(self, rows))

    def _group_columns(self) -> dict[str, np.ndarray]:
        query = self.plan.query
        columns = {name.lower(): np.array([g[k] for g in self.plan.groups], dtype=object)
                   for k, name in enumerate(query.group_by)}
        for k, expression in enumerate(query.group_expressions):
            columns[GROUP_SQL + expression.sql(dialect="duckdb")] = np.array(
                [g[k] for g in self.plan.groups], dtype=object)
        return columns

    def _masked(self, function: str, k: int, a: int) -> tuple[SecretArray, Any]:
        """Side ``k``'s values of argument ``a`` per group part, the others pushed past
        the extreme (a sentinel), and the sentinel."""
        value = self.values[k][a]
        sentinel = (_FIXED_SENTINEL if value.is_fixed else _INT_SENTINEL) * (
            1 if function == "min" else -1)
        flags = self.flags[k][a]  # (parts, n) weighted present flags
        return flags * (value - sentinel) + sentinel, sentinel

    def _extreme(self, function: str, k: int, a: int) -> SecretArray:
        masked, sentinel = self._masked(function, k, a)
        value = self.values[k][a]
        running = SecretArray(self.session, segmented_extreme(
            self.session.backend, self.starts.shares, masked.shares,
            largest=function == "max", full_range=not value.is_fixed), masked.fractional_bits)
        matched = (self.multiplicity(k) >= 1) * self.ends  # (groups, n)
        parts = self._parts(k)
        candidates = matched * (running[parts] - sentinel) + sentinel
        return candidates.min(axis=-1) if function == "min" else candidates.max(axis=-1)

    def spread_back(self, per_end: SecretArray) -> SecretArray:
        """Each key's value at its last row, copied to all of its rows (a reversed
        segmented scan)."""
        backend = self.session.backend
        reverse = per_end.shares[..., ::-1]
        starts = self.ends.shares[..., ::-1]
        copied, _ = sorting.segmented_scan(backend, np.ascontiguousarray(starts),
                                           np.ascontiguousarray(reverse * 1))
        return SecretArray(self.session, np.ascontiguousarray(copied[..., ::-1]),
                           per_end.fractional_bits)

    def row_data(self, k: int, a: int, weighted_values: bool
                 ) -> tuple[rows_module.RowData, SecretArray]:
        """Side ``k``'s rows of argument ``a`` that take part in the join, with their
        group codes, as row data (with ``weighted_values``, each value times its
        matches in the group); and the number of such rows per group.

        When the query groups are ``k``'s own, each row is in at most one group; when
        another table's columns group the join, a row of ``k`` may take part in every
        group (a customer with a savings and a checking account), so its rows are
        repeated once per group, each copy counted where the row takes part."""
        groups = len(self.plan.groups)
        multiplicity = self.multiplicity(k)  # (groups, n)
        mult = self.spread_back(SecretArray.stack([multiplicity[g] * self.ends
                                                   for g in range(groups)]))
        parts = self._parts(k)
        flags = self.flags[k][a][parts]  # (groups, n)
        taking = flags * (mult >= 1)
        value = self.values[k][a]
        if self.plan.groups_own(k):
            codes = (taking * np.arange(groups)[:, None]).sum(axis=0)
            counted = taking.sum(axis=0)
            if weighted_values:
                value = value * (taking * mult).sum(axis=0)
        else:
            codes = (taking * 0 + np.arange(groups)[:, None]).reshape(-1)
            counted = taking.reshape(-1)
            value = (value * mult if weighted_values else taking * 0 + value).reshape(-1)
        shared = rows_module.RowData(codes=codes, counted={0: counted}, values={0: value})
        return shared, taking.sum(axis=-1)

    def _distinct(self, k: int, a: int) -> SecretArray:
        shared, per_group = self.row_data(k, a, weighted_values=False)
        ordered = rows_module.sorted_values(shared, len(self.plan.groups), 0)
        return rows_module.count_distinct(ordered, per_group)


@dataclass
class _JoinRules:
    """What the output policy's rules need, per query group."""

    joined: _Joined
    rows: SecretArray

    def cohort(self) -> SecretArray:
        return self.rows

    def extreme_rows(self, aggregate: Any) -> SecretArray:
        joined = self.joined
        k, a = joined._argument(aggregate)
        extreme = joined._extreme(aggregate.function, k, a)
        masked, _ = joined._masked(aggregate.function, k, a)
        parts = joined._parts(k)
        holding = (masked[parts] == extreme.reshape(-1, 1)) * joined.flags[k][a][parts]
        per_key, _ = sorting.segmented_scan(joined.session.backend, joined.starts.shares,
                                            holding.shares)
        held = SecretArray(joined.session, per_key, 0)
        return (held * joined.multiplicity(k) * joined.ends).sum(axis=-1)

    def dominance(self, aggregate: Any, n: int) -> tuple[SecretArray, SecretArray]:
        joined = self.joined
        k, a = joined._argument(aggregate)
        shared, per_group = joined.row_data(k, a, weighted_values=True)
        total = (joined.sums[k][a][joined._parts(k)] * joined.multiplicity(k)
                 * joined.ends).sum(axis=-1)
        bound = joined.plan.sides[k].ranges[a].bound
        shift = 0
        if bound is not None:  # contributions and totals scaled into the sort's range
            reach = bound * sum(s.entry.schema.rows_bound * len(s.entry.owners)
                                for s in joined.plan.sides)
            while reach / 2**shift >= NARROW_LIMIT:
                shift += 1
        if shift:
            value = shared.values[0]
            shared = rows_module.RowData(shared.codes, shared.counted,
                                         {0: value.as_fixed().truncate(shift)})
            total = total.as_fixed().truncate(shift)
        ordered = rows_module.sorted_values(shared, len(joined.plan.groups), 0)
        top = rows_module.largest(ordered, per_group, n)
        if total.fractional_bits != top.fractional_bits:
            total = total.as_fixed()
            top = top.as_fixed()
        return top, total
