"""Run a plan: local statistics at each owner, secure combination, revelation.

Every compute party calls :func:`run_plan` with the same plan (SPMD); an owner
also passes its own dataset. The result is a :class:`pandas.DataFrame` on the
recipients and ``None`` elsewhere.

Reveals (to every compute party): which groups of the public domain appear in
the result (non-empty groups that pass ``HAVING``); to the recipients: the
selected values of those groups, and which of them are SQL NULL (an average
over no rows, a sample variance over one row). Nothing else: each owner shares
the same number of values whatever its data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from sqlglot import exp

from concilium.data import functions as fn
from concilium.data.dataset import Dataset
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import PolicyViolation, QueryError, UnsupportedQuery
from concilium.governance.policy import OutputPolicy
from concilium.query import rows as rows_module
from concilium.query.delivery import OutputColumn, column_values, deliver, result_frame
from concilium.query.disclosure import complementary, dominance_rules, round_to, rounded_values
from concilium.query.expressions import GROUP_SQL, both, evaluate
from concilium.query.join import JoinPlan, run_join
from concilium.query.local import run_local
from concilium.query.plan import Plan
from concilium.query.secret_groups import run_secret_groups

__all__ = ["column_values", "evaluate", "local_statistics", "result_frame", "round_to",
           "run_plan"]



def local_statistics(plan: Plan, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The owner's partial statistics over the public group domain, computed alone in
    DuckDB: (integers, reals), each of shape (statistics, groups)."""
    table = run_local(plan.local_sql, dataset)
    index = {group: i for i, group in enumerate(plan.groups)}
    keys = range(len(plan.query.group_by))
    group_rows = list(zip(*(table.column(f"g{k}").to_pylist() for k in keys),
                          strict=True)) if plan.query.group_by else [()] * table.num_rows
    positions = np.array([index[tuple(g)] for g in group_rows], dtype=np.intp)
    count = len(plan.groups)

    def filled(statistics: Sequence[Any], dtype: type) -> np.ndarray:
        out: np.ndarray = np.empty((len(statistics), count), dtype=dtype)
        for k, statistic in enumerate(statistics):
            out[k] = statistic.empty
            column = pc.fill_null(table.column(statistic.name), statistic.empty)
            values: np.ndarray = np.asarray(column.to_numpy(), dtype=dtype)
            if dtype is np.float64:
                values = np.where(np.isnan(values), statistic.empty, values)
            out[k, positions] = values
        return out

    return filled(plan.integer_statistics, np.int64), filled(plan.fixed_statistics, np.float64)


class _Combiner:
    """Per-group aggregates on secret shares from every owner's partial statistics."""

    def __init__(self, session: Session, plan: Plan, integers: list[SecretArray],
                 reals: list[SecretArray]) -> None:
        self.session, self.plan = session, plan
        self.by_owner: dict[str, list[SecretArray]] = {}
        for k, statistic in enumerate(plan.integer_statistics):
            self.by_owner[statistic.name] = [shares[k] for shares in integers]
        for k, statistic in enumerate(plan.fixed_statistics):
            self.by_owner[statistic.name] = [shares[k] for shares in reals]
        self.cache: dict[str, SecretArray] = {}

    def total(self, name: str) -> SecretArray:
        if name not in self.cache:
            parts = self.by_owner[name]
            result = parts[0]
            for part in parts[1:]:
                result = result + part
            self.cache[name] = result
        return self.cache[name]

    def stacked(self, name: str) -> SecretArray:
        parts = self.by_owner[name]
        session = self.session
        shares = np.stack([p.shares for p in parts], axis=1)
        return SecretArray(session, shares, parts[0].fractional_bits)

    def mean(self, i: int) -> SecretArray:
        key = f"mean{i}"
        if key not in self.cache:
            self.cache[key] = fn.divide(self.total(f"s{i}").as_fixed(), self.total(f"c{i}"))
        return self.cache[key]

    def deviations(self, i: int) -> SecretArray:
        """Sum of squared deviations from the global mean (Chan et al.)."""
        key = f"m2_{i}"
        if key not in self.cache:
            spread = self.stacked(f"m{i}") - self.mean(i)
            between = (self.stacked(f"c{i}") * (spread * spread)).sum(axis=0)
            self.cache[key] = self.total(f"q{i}") + between
        return self.cache[key]

    def correlation(self, j: int) -> SecretArray:
        n = self.total(f"pn{j}")
        counts = self.stacked(f"pn{j}")
        means_x, means_y = self.stacked(f"pmx{j}"), self.stacked(f"pmy{j}")
        weighted = (counts * SecretArray.stack([means_x, means_y])).sum(axis=1)
        mean_x, mean_y = (fn.divide(weighted[k], n) for k in range(2))
        dx, dy = means_x - mean_x, means_y - mean_y
        products = counts * SecretArray.stack([dx * dx, dy * dy, dx * dy])
        extra = products.sum(axis=1)
        sxx = self.total(f"pqx{j}") + extra[0]
        syy = self.total(f"pqy{j}") + extra[1]
        sxy = self.total(f"pc{j}") + extra[2]
        roots = fn.sqrt(SecretArray.stack([sxx, syy]))
        # divide twice: 1/sqrt(Syy) alone can be a few units in the last place
        return fn.divide(fn.divide(sxy, roots[0]), roots[1])

    def extreme_rows(self, function: str, i: int) -> SecretArray:
        """Per group, how many rows hold the (global) MIN or MAX of argument ``i``: the
        rows at each owner's local extreme, for the owners whose extreme it is."""
        held = f"{'lon' if function == 'min' else 'hin'}{i}"
        if held not in self.by_owner:  # never skip a rule: the plan must provide for it
            raise PolicyViolation("the plan was made without the output policy's minimum "
                                  "cohort, which MIN and MAX need; plan the query with it")
        local = self.stacked(f"lo{i}" if function == "min" else f"hi{i}")
        value, _ = self.aggregate(function, (i,))
        return ((local == value) * self.stacked(held)).sum(axis=0)

    def aggregate(self, function: str, indices: tuple[int, ...]) -> tuple[SecretArray,
                                                                          tuple[str, int] | None]:
        """The aggregate's value per group and its definedness test (count name, minimum)."""
        if not indices:
            return self.total("n"), None
        i = indices[0]
        if function == "count":
            return self.total(f"c{i}"), None
        if function == "sum":
            return self.total(f"s{i}"), (f"c{i}", 1)
        if function == "avg":
            return self.mean(i), (f"c{i}", 1)
        if function in ("min", "max"):
            key = f"{function}{i}"
            if key not in self.cache:
                stacked = self.stacked(f"lo{i}" if function == "min" else f"hi{i}")
                self.cache[key] = (stacked.min(axis=0) if function == "min"
                                   else stacked.max(axis=0))
            return self.cache[key], (f"c{i}", 1)
        if function in ("var_samp", "var_pop", "stddev_samp", "stddev_pop"):
            sample = function.endswith("samp")
            count = self.total(f"c{i}") - 1 if sample else self.total(f"c{i}")
            variance = fn.divide(self.deviations(i), count)
            value = fn.sqrt(fn.relu(variance)) if function.startswith("stddev") else variance
            return value, (f"c{i}", 2 if sample else 1)
        if function == "corr":
            j = self.plan.pairs[(indices[0], indices[1])]
            return self.correlation(j), (f"pn{j}", 2)
        raise UnsupportedQuery(f"aggregate {function} is not supported", construct=function)


def _input_statistics(session: Session, plan: Plan, dataset: Dataset | None
                      ) -> tuple[list[SecretArray], list[SecretArray]]:
    integers, reals = [], []
    for owner in plan.entry.owners:
        mine = session.party == owner
        local = local_statistics(plan, dataset) if mine and dataset is not None else None
        if mine and local is None:
            raise QueryError(f"party {owner} owns part of {plan.query.table!r} but has no "
                             "dataset for it")
        integers.append(session.input(owner, local[0] if local else None))
        if plan.fixed_statistics:
            reals.append(session.input(owner, local[1] if local else None, fixed=True))
    return integers, reals


def run_plan(session: Session, plan: Any, datasets: Mapping[str, Dataset],
             to: Sequence[int] | None = None,
             policy: OutputPolicy | None = None) -> pd.DataFrame | None:
    """Run ``plan`` (a :class:`Plan` or a join plan) on this party; the result frame on
    recipients, else None. ``policy``: the output policy enforced on secret shares
    (cohort sizes, rounding); the frame's ``attrs["suppressed"]`` lists the cells it
    suppressed and why."""
    policy = policy or OutputPolicy()
    if isinstance(plan, JoinPlan):
        joined, known, cohort, extremes = run_join(session, plan, dict(datasets),
                                                   extremes=policy.min_cohort > 1)
        rules = [_extreme_rule(text, policy.min_cohort, rows)
                 for text, rows in extremes.items()]
        return _finish(session, plan, joined, known, {}, True, to, policy, cohort, rules)
    if plan.query.secret_group:
        return run_secret_groups(session, plan, datasets, to, policy)
    dataset = datasets.get(plan.query.table)
    integers, reals = _input_statistics(session, plan, dataset)
    combiner = _Combiner(session, plan, integers, reals)
    rows = rows_module.input_rows(session, plan, dataset) if plan.row_arguments else None
    ordered: dict[int, rows_module.SortedRows] = {}
    values: dict[str, SecretArray] = {}
    tests: dict[str, tuple[str, int] | None] = {}
    for aggregate in plan.query.aggregates:
        indices = tuple(plan.arguments[a.sql(dialect="duckdb")] for a in aggregate.arguments)
        if aggregate.function in ("quantile", "count_distinct"):
            assert rows is not None
            i = indices[0]
            if i not in ordered:
                ordered[i] = rows_module.sorted_values(rows, len(plan.groups), i)
            if aggregate.function == "count_distinct":
                values[aggregate.sql] = rows_module.count_distinct(ordered[i],
                                                                   combiner.total(f"c{i}"))
                tests[aggregate.sql] = None
                continue
            assert aggregate.fraction is not None
            values[aggregate.sql] = rows_module.quantile(ordered[i].values,
                                                         combiner.total(f"c{i}"),
                                                         aggregate.fraction)
            tests[aggregate.sql] = (f"c{i}", 1)
            continue
        values[aggregate.sql], tests[aggregate.sql] = combiner.aggregate(aggregate.function,
                                                                         indices)
    grouped = bool(plan.query.group_by)
    needed = sorted({t for t in tests.values() if t is not None} | ({("n", 1)} if grouped
                                                                     else set()))
    bits: dict[tuple[str, int], SecretArray] = {}
    if needed:
        stacked = SecretArray.stack([combiner.total(name) for name, _ in needed])
        thresholds = np.array([minimum for _, minimum in needed])[:, None]
        flags = stacked >= thresholds
        bits = {key: flags[k] for k, key in enumerate(needed)}
    defined = {text: (True if test is None else bits[test]) for text, test in tests.items()}
    columns = {name.lower(): np.array([g[k] for g in plan.groups], dtype=object)
               for k, name in enumerate(plan.query.group_by)}
    for k, expression in enumerate(plan.query.group_expressions):
        columns[GROUP_SQL + expression.sql(dialect="duckdb")] = np.array(
            [g[k] for g in plan.groups], dtype=object)
    rules = dominance_rules(plan, policy, rows, ordered, combiner.total)
    if policy.min_cohort > 1:
        for aggregate in plan.query.aggregates:
            if aggregate.function in ("min", "max"):
                i = plan.arguments[aggregate.arguments[0].sql(dialect="duckdb")]
                rules.append(_extreme_rule(aggregate.sql, policy.min_cohort,
                                           combiner.extreme_rows(aggregate.function, i)))
    return _finish(session, plan, values, defined, columns,
                   bits[("n", 1)] if grouped else True, to, policy, combiner.total("n"), rules)


def _extreme_rule(text: str, minimum: int, rows: SecretArray) -> tuple[str, SecretArray]:
    """Under a minimum cohort, an extreme is one person's value unless at least
    ``minimum`` rows of its cell share it."""
    return (f"min_cohort: fewer than {minimum} rows hold the value of {text}",
            rows < minimum)


def _finish(session: Session, plan: Any, values: Mapping[str, SecretArray],
            defined: Mapping[str, Any], columns: Mapping[str, np.ndarray], include: Any,
            to: Sequence[int] | None, policy: OutputPolicy, cohort: SecretArray,
            rules: Sequence[tuple[str, SecretArray]] = ()) -> pd.DataFrame | None:
    """HAVING, the groups that appear, the cohort rule, ordering, and the reveal.

    Reveals: which groups appear (non-empty, passing HAVING) and, under a
    minimum cohort, which of them are released; the counts stay secret."""
    if plan.query.having is not None:
        passed, passed_ok = evaluate(plan.query.having, values, defined, columns, session)
        include = both(include, both(passed, passed_ok))
    if include is True:
        chosen = np.arange(len(plan.groups))
    else:
        opened = include.reveal()
        chosen = np.flatnonzero(np.atleast_1d(opened))
    chosen = _public_order(plan, chosen, columns)
    suppressed: list[dict[str, Any]] = []
    checks = list(rules)
    if policy.min_cohort > 1:
        checks.insert(0, (f"min_cohort: fewer than {policy.min_cohort} rows",
                          cohort < policy.min_cohort))
    if checks and len(chosen):
        # only each cell's suppressed-or-not flag per rule is opened, never a count
        flags = SecretArray.stack([flag[chosen] for _, flag in checks]).reveal()
        reasons: dict[int, str] = {}
        for (rule, _), hits in zip(checks, np.atleast_2d(np.asarray(flags)), strict=True):
            for index in chosen[np.asarray(hits, dtype=bool)]:
                reasons.setdefault(int(index), rule)
        reasons.update(complementary(plan, [int(i) for i in chosen], set(reasons)))
        for index, rule in sorted(reasons.items()):
            suppressed.append({"group": dict(zip(plan.query.group_by, plan.groups[index],
                                                 strict=True)), "rule": rule})
        chosen = np.array([i for i in chosen if int(i) not in reasons], dtype=np.intp)
    rounded = rounded_values(values, policy)
    return _reveal_rows(plan, chosen, rounded, defined, columns, session, to, suppressed)


def _public_order(plan: Any, chosen: np.ndarray, columns: Mapping[str, np.ndarray]
                  ) -> np.ndarray:
    """Order and cut by group columns (public) before anything else is revealed."""
    group_names = {g.lower() for g in plan.query.group_by}
    public = [(e, d) for e, d in plan.query.order_by
              if isinstance(e, exp.Column) and e.name.lower() in group_names]
    if public and len(public) == len(plan.query.order_by):
        frame = pd.DataFrame({f"k{k}": columns[e.name.lower()][chosen]
                              for k, (e, _) in enumerate(public)})
        frame = frame.sort_values([f"k{k}" for k in range(len(public))],
                                  ascending=[not d for _, d in public], kind="stable",
                                  na_position="last")
        chosen = chosen[frame.index.to_numpy()]
    if plan.query.limit is not None:
        chosen = chosen[: plan.query.limit]
    return chosen


def _reveal_rows(plan: Any, chosen: np.ndarray, values: Mapping[str, SecretArray],
                 defined: Mapping[str, Any], columns: Mapping[str, np.ndarray],
                 session: Session, to: Sequence[int] | None,
                 suppressed: Sequence[dict[str, Any]]) -> pd.DataFrame | None:
    outputs = []
    for node, name in plan.query.select:
        value, ok = evaluate(node, values, defined, columns, session)
        if isinstance(value, SecretArray):
            outputs.append(OutputColumn(name, value[chosen], ok[chosen] if isinstance(
                ok, SecretArray) else None))
        else:
            public = np.broadcast_to(np.asarray(value, dtype=object), (len(plan.groups),))[
                chosen] if np.ndim(value) else np.full(len(chosen), value, dtype=object)
            outputs.append(OutputColumn(name, public))
    public_order = [g.lower() for g in plan.query.group_by]
    delivery = deliver(session, outputs, len(chosen), to, suppressed, public_order)
    return None if delivery is None else result_frame(plan, delivery, session.threat_model)
