"""``GROUP BY`` on a secret key (no public domain): the *secret-key groups* plan kind.

Each owner shares all its rows: the key, a 0/1 flag (the row passes
``WHERE``), and the aggregate arguments with their not-NULL flags. The
compute parties then

1. sort the rows by (does not count, key), so that every group's rows are
   adjacent (:mod:`concilium.ops.sort`: shuffle, then opened comparisons of
   distinct shuffled rows);
2. mark where a group starts (the key or the flag changes: secure equality)
   and run segmented scans (:func:`concilium.ops.sort.segmented_scan` for counts
   and sums, :func:`concilium.ops.scan.segmented_extreme` for MIN and MAX), so
   that each group's last row holds its totals;
3. finish ``AVG`` and the ``SELECT`` and ``HAVING`` expressions on every row,
   apply the output policy's rules (:mod:`concilium.query.rules`) on shares,
   and flag the rows to output: a group's last row, of counted rows, passing
   ``HAVING`` and not suppressed;
4. shuffle those rows again with a fresh secret permutation, open the flags,
   and open the selected columns of the flagged rows only.

The rules on secret groups: a minimum cohort drops small groups; complementary
suppression makes sure that when exactly one group is dropped a second one is
(the released group with the fewest rows, chosen on shares), so that no group
can be recomputed as a total minus the released ones; the (n, k) dominance
rule sorts each summed argument within its groups and compares the ``n``
largest contributions with ``k``% of the sum. Suppressed groups are not listed
(their keys are secret); the rules that applied are.

Reveals: each owner's row count; the number of groups in the result and their
selected values (the result itself); nothing about which rows formed which
group (the second shuffle hides the positions).
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
from concilium.errors import QueryError, UnsupportedQuery
from concilium.governance.policy import OutputPolicy
from concilium.ops import sort as sorting
from concilium.ops.scan import segmented_extreme
from concilium.query.aggregate_planning import analyze_arguments, formats_of, row_sql
from concilium.query.aggregates import SECRET_GROUPS, sql_names, supported_by
from concilium.query.catalog import TableEntry
from concilium.query.delivery import OutputColumn, deliver, result_frame
from concilium.query.expressions import evaluate
from concilium.query.finish import Format
from concilium.query.local import run_local, share_rows
from concilium.query.partials import mean_of
from concilium.query.plans import QueryPlan
from concilium.query.rules import round_to, suppression_flags
from concilium.query.sql import Query
from concilium.query.statistics import ArgumentRange

__all__ = ["SECRET_GROUP_FUNCTIONS", "GroupRows", "SecretGroupPlan", "local_group_rows",
           "plan_secret_groups", "run_groups", "table_rows"]

SECRET_GROUP_FUNCTIONS = supported_by(SECRET_GROUPS)
_INT_SENTINEL = 2**62
_FIXED_SENTINEL = float(2**31 - 1)


@dataclass(frozen=True)
class SecretGroupPlan(QueryPlan):
    """How a query grouped by a secret key runs."""

    query: Query
    entry: TableEntry
    arguments: dict[str, int]
    ranges: tuple[ArgumentRange, ...]
    row_arguments: tuple[int, ...]
    row_sql: str
    formats: dict[str, Format]

    @property
    def kind(self) -> str:
        return SECRET_GROUPS

    @property
    def tables(self) -> Mapping[str, TableEntry]:
        return {self.query.table: self.entry}

    @property
    def shares_rows(self) -> bool:
        return True

    @property
    def argument_fixed(self) -> tuple[bool, ...]:
        return tuple(not r.integral for r in self.ranges)

    def columns(self) -> set[str]:
        nodes: list[exp.Expr] = [node for node, _ in self.query.select]
        nodes += [n for n in (self.query.where, self.query.having) if n is not None]
        nodes += list(self.query.group_expressions)
        for aggregate in self.query.aggregates:
            nodes += list(aggregate.arguments)
        names = {c.name.lower() for node in nodes for c in node.find_all(exp.Column)}
        output_names = {name.lower() for _, name in self.query.select}
        return names - (output_names - names)

    def local_inputs(self, datasets: Mapping[str, Dataset], party: int
                     ) -> Iterator[tuple[np.ndarray, bool]]:
        if party not in self.entry.owners:
            return
        if self.query.table not in datasets:
            raise QueryError(f"party {party} owns part of {self.query.table!r} but has no "
                             "dataset for it")
        flags, values = local_group_rows(self, datasets[self.query.table])
        yield flags, False
        yield from zip(values, [self.argument_fixed[i] for i in self.row_arguments],
                       strict=True)

    def run(self, session: Session, datasets: Mapping[str, Dataset],
            to: Sequence[int] | None, policy: OutputPolicy) -> pd.DataFrame | None:
        return _run(session, self, datasets.get(self.query.table), to, policy)

    def explain(self, who: Callable[[int], str], recipients: Sequence[int] | None) -> str:
        query = self.query
        owners = ", ".join(who(p) for p in self.entry.owners)
        to = ("every compute party" if recipients is None
              else ", ".join(who(p) for p in recipients))
        local = textwrap.indent(self.row_sql, "       ")
        finish = "\n".join(f"     - {a.sql}" for a in query.aggregates)
        return f"""Query
  {query.sql.strip()}

1. Locally, at each owner of {query.table} ({owners}), in DuckDB: every row with its
   group key {query.group_by[0]}, whether it passes WHERE, and the aggregate arguments:
{local}

2. Shared as secret shares with the compute parties: all of those rows (each owner's
   row count is revealed, not how many rows pass the filter).

3. Computed on secret shares: sort the rows by key (a secret shuffle, then comparisons
   of distinct shuffled rows, which reveal nothing), mark where each group starts
   (secure equality), segmented sums and extremes so each group's last row holds its
   totals, then:
{finish}
   and the HAVING and SELECT expressions and the output policy's rules; shuffle again
   and open which rows are groups.

4. Revealed to every compute party: the number of groups in the result. To {to}: the
   selected columns ({", ".join(n for _, n in query.select)}), including the group keys.
"""


def plan_secret_groups(query: Query, entry: TableEntry) -> SecretGroupPlan:
    """GROUP BY a secret key: every row is shared."""
    for aggregate in query.aggregates:
        if aggregate.function not in SECRET_GROUP_FUNCTIONS:
            raise UnsupportedQuery(f"with GROUP BY on a secret key, "
                                   f"{sql_names(SECRET_GROUP_FUNCTIONS)} are supported, not "
                                   f"{aggregate.sql}", construct=aggregate.sql)
    arguments, ranges, local = analyze_arguments(query, entry)
    rows = tuple(range(len(arguments)))
    fixed = tuple(not r.integral for r in ranges)
    return SecretGroupPlan(query, entry, arguments, ranges, rows,
                           row_sql(query, local, fixed, rows),
                           formats_of(query, arguments, ranges))


def local_group_rows(plan: SecretGroupPlan, dataset: Dataset
                     ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(key, passes WHERE, arguments not NULL) as integers, and the arguments."""
    table = run_local(plan.row_sql, dataset)
    flags = [np.asarray(table.column("g0").to_numpy(), dtype=np.int64),
             np.asarray(table.column("w").to_numpy(), dtype=np.int64)]
    values = []
    for i in plan.row_arguments:
        column = table.column(f"a{i}")
        flags.append((~np.asarray(column.is_null().to_numpy(), dtype=bool)).astype(np.int64))
        values.append(np.asarray(pc.fill_null(column, 0).to_numpy(),
                                 dtype=np.float64 if plan.argument_fixed[i] else np.int64))
    return np.stack(flags), values


@dataclass
class GroupRows:
    """Rows to group by a secret key, on shares, in any order (each ``(n,)``)."""

    key: SecretArray
    counted: SecretArray  # 0/1: the row takes part
    weight: SecretArray  # how many result rows it stands for (``counted`` for a table)
    counts: list[SecretArray]  # per argument: the non-NULL result rows it stands for
    sums: list[SecretArray]  # per argument: its contribution to the argument's sum
    flags: list[SecretArray]  # per argument: 0/1, it holds a non-NULL value
    values: list[SecretArray]  # per argument: its value
    #: per argument, the order of its contributions within a group (for dominance);
    #: by default its value, absent rows first
    orders: list[SecretArray] | None = None

    def order(self, k: int) -> SecretArray:
        if self.orders is not None:
            return self.orders[k]
        value, flag = self.values[k], self.flags[k]
        lowest: float | int = _FIXED_SENTINEL if value.is_fixed else _INT_SENTINEL
        return flag * (value + lowest) - lowest


def table_rows(flags: SecretArray, values: list[SecretArray]) -> GroupRows:
    """A table's shared rows (key, passes WHERE, not-NULL flags; the arguments)."""
    keys, counted = flags[0], flags[1]
    present = [counted * flags[2 + k] for k in range(len(values))]
    sums = [p * v for p, v in zip(present, values, strict=True)]
    return GroupRows(keys, counted, counted, present, sums, present, values)


@dataclass
class _Sorted:
    """The shared rows in group order, with what the scans made of them."""

    key: SecretArray
    counted: SecretArray
    counts: list[SecretArray]
    flags: list[SecretArray]
    values: list[SecretArray]
    starts: SecretArray
    last: SecretArray
    totals: list[SecretArray]  # weight, each argument's non-NULL count, each sum


def _sorted_rows(session: Session, query: Query, given: GroupRows) -> _Sorted:
    backend = session.backend
    count = len(given.values)
    extremes = any(a.function in ("min", "max") for a in query.aggregates)
    columns = [given.counted, given.weight, *given.counts, *given.sums,
               *((given.flags + given.values) if extremes else [])]
    unique: dict[int, int] = {}  # a column given twice (a table's counts are its flags)
    for column in columns:
        unique.setdefault(id(column), len(unique))
    distinct = list({id(c): c for c in columns}.values())
    outcome = sorting.sort(backend, [sorting.SortKey((1 - given.counted).shares,
                                                     full_range=False),
                                     sorting.SortKey(given.key.shares, full_range=True)],
                           [c.shares for c in distinct])
    moved = [SecretArray(session, shares, c.fractional_bits)
             for shares, c in zip(outcome.payload, distinct, strict=True)]
    rows = [moved[unique[id(c)]] for c in columns]
    key = SecretArray(session, outcome.keys[1], 0)
    one = session.constant(np.ones(1, dtype=np.int64))
    same = (key[1:] == key[:-1]) * (rows[0][1:] == rows[0][:-1])
    starts = SecretArray.concatenate([one, 1 - same], axis=-1)
    width = 1 + 2 * count
    totals_shares, _ = sorting.segmented_scan(backend, starts.shares,
                                              np.stack([r.shares for r in rows[1:1 + width]],
                                                       axis=1))
    totals = [SecretArray(session, totals_shares[:, k], r.fractional_bits)
              for k, r in enumerate(rows[1:1 + width])]
    last = SecretArray.concatenate([starts[1:], one], axis=-1)
    flags = rows[2 + 2 * count:2 + 3 * count] if extremes else given.flags
    values = rows[2 + 3 * count:] if extremes else given.values
    return _Sorted(key, rows[0], rows[2:2 + count], flags, values, starts, last, totals)


@dataclass
class _GroupRules:
    """What the output policy's rules need, per sorted row (a group's last row holds
    its cell)."""

    session: Session
    argument_of: Callable[[Any], int]
    sorted_rows: _Sorted
    given: GroupRows
    aggregates: Mapping[str, SecretArray]

    def cohort(self) -> SecretArray:
        return self.sorted_rows.totals[0]

    def extreme_rows(self, aggregate: Any) -> SecretArray:
        """Per group (at its last row), the rows that hold its MIN or MAX: the group's
        extreme copied back to all of its rows (a reversed segmented scan), compared
        with each row, and the rows each stands for added up per group."""
        session, rows = self.session, self.sorted_rows
        backend = session.backend
        k = self.argument_of(aggregate)
        extreme = self.aggregates[aggregate.sql] * rows.last
        copied, _ = sorting.segmented_scan(backend,
                                           np.ascontiguousarray(rows.last.shares[..., ::-1]),
                                           np.ascontiguousarray(extreme.shares[:, None, ::-1]))
        spread = SecretArray(session, np.ascontiguousarray(copied[:, 0, ::-1]),
                             extreme.fractional_bits)
        holding = rows.counts[k] * (rows.values[k] == spread)
        held, _ = sorting.segmented_scan(backend, rows.starts.shares, holding.shares[:, None])
        return SecretArray(session, held[:, 0], 0)

    def dominance(self, aggregate: Any, n: int) -> tuple[SecretArray, SecretArray]:
        """Sort the argument's rows within the groups (the same group order, so each
        group ends at the same position) and add the last ``n`` of each group."""
        session, given = self.session, self.given
        k = self.argument_of(aggregate)
        contribution, order = given.sums[k], given.order(k)
        outcome = sorting.sort(session.backend, [
            sorting.SortKey((1 - given.counted).shares, full_range=False),
            sorting.SortKey(given.key.shares, full_range=True),
            sorting.SortKey(order.shares, full_range=not order.is_fixed)],
            [contribution.shares])
        key = SecretArray(session, outcome.keys[1], 0)
        flag = SecretArray(session, outcome.keys[0], 0)
        ranked = SecretArray(session, outcome.payload[0], contribution.fractional_bits)
        same = (key[1:] == key[:-1]) * (flag[1:] == flag[:-1])
        top, together = ranked, None
        length = ranked.shape[0]
        for j in range(1, min(n, length)):
            # rows t - j .. t in one group: the product of the j links before row t
            step = same if together is None else together[1:] * same[:length - j]
            shifted = SecretArray.concatenate([ranked[:j] * 0, ranked[:-j] * step], axis=-1)
            top = top + shifted
            together = step
        whole = self.sorted_rows.totals[1 + len(given.values) + k]
        return top, whole


def _run(session: Session, plan: SecretGroupPlan, dataset: Dataset | None,
         to: Sequence[int] | None, policy: OutputPolicy) -> pd.DataFrame | None:
    flags, values = share_rows(
        session, plan.entry.owners, plan.query.table,
        None if dataset is None else (lambda: local_group_rows(plan, dataset)),
        [plan.argument_fixed[i] for i in plan.row_arguments])

    def argument_of(aggregate: Any) -> int:
        return plan.row_arguments.index(plan.arguments[aggregate.arguments[0].sql(
            dialect="duckdb")])

    return run_groups(session, plan, table_rows(flags, values), argument_of,
                      lambda k: plan.ranges[plan.row_arguments[k]], to, policy)


def run_groups(session: Session, plan: Any, given: GroupRows,
               argument_of: Callable[[Any], int], range_of: Callable[[int], ArgumentRange],
               to: Sequence[int] | None, policy: OutputPolicy) -> pd.DataFrame | None:
    """Group ``given`` rows by their secret key, finish the aggregates, apply the
    output policy and deliver (steps 1 to 4 above)."""
    rows = _sorted_rows(session, plan.query, given)
    if rows.key.shape[0] == 0:
        return _frame(session, plan, {}, {}, rows.key, rows.key, to, [])
    count = len(given.values)
    aggregates: dict[str, SecretArray] = {}
    defined: dict[str, Any] = {}
    for aggregate in plan.query.aggregates:
        if not aggregate.arguments:
            aggregates[aggregate.sql], defined[aggregate.sql] = rows.totals[0], True
            continue
        k = argument_of(aggregate)
        non_null, total = rows.totals[1 + k], rows.totals[1 + count + k]
        if aggregate.function == "count":
            aggregates[aggregate.sql], defined[aggregate.sql] = non_null, True
            continue
        defined[aggregate.sql] = non_null >= 1
        if aggregate.function == "sum":
            aggregates[aggregate.sql] = total
        elif aggregate.function == "avg":
            aggregates[aggregate.sql] = mean_of(total, non_null, range_of(k))
        else:
            largest = aggregate.function == "max"
            value = rows.values[k]
            sentinel = (_FIXED_SENTINEL if value.is_fixed else _INT_SENTINEL) * (
                -1 if largest else 1)
            masked = rows.flags[k] * (value - sentinel) + sentinel
            extreme = segmented_extreme(session.backend, rows.starts.shares, masked.shares,
                                        largest=largest, full_range=not value.is_fixed)
            aggregates[aggregate.sql] = SecretArray(session, extreme, value.fractional_bits)
    include = rows.last * rows.counted
    context = _GroupRules(session, argument_of, rows, given, aggregates)
    checks = suppression_flags(plan, policy, context)
    suppressed = []
    if checks:
        hidden = None
        for _, flag in checks:
            hidden = flag if hidden is None else hidden + flag - hidden * flag
        assert hidden is not None
        include = include * _complementary(include, hidden, rows.totals[0])
        for rule, _ in checks:
            suppressed.append({"group": "groups with secret keys are not listed",
                               "rule": rule})
        suppressed.append({"group": "groups with secret keys are not listed",
                           "rule": "complementary: a second group is hidden whenever only "
                                   "one would be"})
    if policy.rounding is not None:
        aggregates = {text: round_to(value, policy.rounding)
                      for text, value in aggregates.items()}
    if plan.query.having is not None:
        passed, passed_ok = evaluate(plan.query.having, aggregates, defined,
                                     _group_values(plan, rows.key), session)
        include = include * passed * (passed_ok if isinstance(passed_ok, SecretArray)
                                      else 1)
    return _frame(session, plan, aggregates, defined, include, rows.key, to, suppressed)


def _group_values(plan: Any, key: SecretArray) -> dict[str, SecretArray]:
    return {plan.query.group_by[0].lower(): key,
            "sql:" + plan.query.group_expressions[0].sql(dialect="duckdb"): key}


def _complementary(groups: SecretArray, hidden: SecretArray, sizes: SecretArray
                   ) -> SecretArray:
    """0/1 per row: kept. ``groups`` flags each group's row; ``hidden`` the groups the
    rules suppress. When exactly one group is hidden, the released group with the
    fewest rows is hidden too (chosen on shares), so totals expose no group.

    Reveals: nothing."""
    primary = groups * hidden
    kept = groups - primary
    exactly_one = primary.sum() == 1
    big = 2**40
    candidates = kept * (sizes - big) + big  # rows that are not kept groups weigh 2^40
    smallest = candidates.argmin()
    positions = np.arange(groups.shape[0])
    second = (smallest == positions) * kept
    return (1 - hidden) * (1 - second * exactly_one)


def _frame(session: Session, plan: Any, aggregates: Mapping[str, SecretArray],
           defined: Mapping[str, Any], include: SecretArray, key: SecretArray,
           to: Sequence[int] | None, suppressed: list[dict[str, Any]]
           ) -> pd.DataFrame | None:
    group_values = _group_values(plan, key)
    outputs = []
    for node, name in plan.query.select:
        value, ok = evaluate(node, aggregates, defined, group_values, session)
        if not isinstance(value, SecretArray):
            value = key * 0 + value
        known = ok if isinstance(ok, SecretArray) else key * 0 + 1
        text = node.sql(dialect="duckdb")
        outputs.append((name, value, known, plan.formats.get(text, Format())))
    columns = [include] + [v for _, v, _, _ in outputs] + [k for _, _, k, _ in outputs]
    if key.shape[0] == 0:
        shuffled = columns
    else:  # hide which sorted positions are group ends
        moved, _ = sorting.shuffle(session.backend, [c.shares for c in columns])
        shuffled = [SecretArray(session, m, c.fractional_bits)
                    for m, c in zip(moved, columns, strict=True)]
    chosen = np.flatnonzero(np.atleast_1d(shuffled[0].reveal()))
    released = [OutputColumn(name, shuffled[1 + k][chosen],
                             shuffled[1 + len(outputs) + k][chosen], form.categories,
                             form.decimals)
                for k, (name, _, _, form) in enumerate(outputs)]
    delivery = deliver(session, released, len(chosen), to, suppressed)
    return None if delivery is None else result_frame(plan, delivery, session.threat_model)
