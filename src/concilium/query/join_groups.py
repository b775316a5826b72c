"""``GROUP BY`` a secret key over a join: the joined rows grouped securely.

``SELECT a.branch, COUNT(*), SUM(c.income) FROM customers c JOIN accounts a
ON c.id = a.customer GROUP BY a.branch``, where ``branch`` has no public
domain: the groups are found on shares, as for one table
(:mod:`concilium.query.secret_groups`), from the rows of the *grouping table*
(the table whose column groups the join), each standing for its joined rows.

Protocol:

1. The join runs as an ungrouped join (:mod:`concilium.query.join`, steps 1 to
   3): all tables' rows sorted together by join key, each key's rows totalled
   per table; the grouping column is shared as one more column of its table.
2. Per key, on shares: how many joined rows each row of the grouping table
   stands for (the product of the other tables' counts; for a ``LEFT JOIN``
   from the grouping table, at least one), and for each argument of another
   table its non-NULL count and sum times the remaining tables' counts; these
   are copied back to every row of the key (a reversed segmented scan).
3. Each row of the grouping table that takes part in the join becomes one row
   of a secret-key grouping, weighted by its joined rows: its key is its
   grouping value, its counts and sums are those of step 2 (an argument of its
   own table: its value times its joined rows). Steps 1 to 4 of
   :mod:`concilium.query.secret_groups` follow: sort by key, segmented totals,
   the output policy's rules, a second shuffle, and only the released groups are
   opened.

MIN and MAX take arguments of the grouping table; the dominance rule weighs each
row of the grouping table by its joined rows, so it applies to SUM and AVG of the
grouping table's columns (a query summing another table's column under a
dominance rule is refused at planning).

Reveals: each table's row count; the number of groups in the result and their
selected values (the result itself); nothing about which rows matched or formed
which group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from concilium.data.dataset import Dataset
from concilium.data.secret_array import SecretArray
from concilium.data.session import Session
from concilium.errors import PolicyViolation
from concilium.governance.policy import OutputPolicy
from concilium.query.aggregates import SECRET_GROUPS
from concilium.query.finish import Format
from concilium.query.join import JoinPlan, _Joined
from concilium.query.secret_groups import GroupRows, run_groups
from concilium.query.statistics import ArgumentRange

__all__ = ["JoinGroupsPlan"]


@dataclass(frozen=True)
class JoinGroupsPlan(JoinPlan):
    """A join grouped by one secret column of one of its tables."""

    group_side: int = 0  # the grouping table's position in ``sides``

    @property
    def kind(self) -> str:
        return SECRET_GROUPS

    @property
    def formats(self) -> dict[str, Format]:
        formats = {}
        for aggregate in self.query.aggregates:
            if aggregate.arguments and aggregate.function in ("sum", "min", "max"):
                k, a = self.argument_side[aggregate.arguments[0].sql(dialect="duckdb")]
                decimals = self.sides[k].ranges[a].decimals
                if decimals is not None:
                    formats[aggregate.sql] = Format(decimals=decimals)
        return formats

    def refuse_rules(self, policy: OutputPolicy) -> None:
        if policy.dominance is None:
            return
        for aggregate in self.query.aggregates:
            if aggregate.function in ("sum", "avg"):
                k, _ = self.argument_side[aggregate.arguments[0].sql(dialect="duckdb")]
                if k != self.group_side:
                    raise PolicyViolation(
                        f"the output policy's dominance rule cannot be enforced on "
                        f"{aggregate.sql} grouped by a secret column of another table "
                        f"({self.sides[self.group_side].alias}); the query is refused "
                        "rather than run without it")

    def run(self, session: Session, datasets: Mapping[str, Dataset],
            to: Sequence[int] | None, policy: OutputPolicy) -> pd.DataFrame | None:
        joined = _Joined.build(session, self, datasets)
        rows, order = _grouping_rows(joined, self)
        return run_groups(session, self, rows, lambda aggregate: order[aggregate.sql],
                          self._range, to, policy)

    def _range(self, k: int) -> ArgumentRange:
        side, index = self._arguments()[k]
        return self.sides[side].ranges[index]

    def _arguments(self) -> list[tuple[int, int]]:
        """The aggregate arguments as (side, index), in the grouping's order."""
        return list(dict.fromkeys(self.argument_side[a.arguments[0].sql(dialect="duckdb")]
                                  for a in self.query.aggregates if a.arguments))

    def _grouping_text(self) -> tuple[str, str]:
        grouping = self.sides[self.group_side]
        grouped = (f", grouped after it by {self.query.group_by[0]}, a secret column of "
                   f"{grouping.table}")
        return grouped, (f"Grouping: each row of {grouping.table} in the join stands for its "
                         "joined rows; those rows are sorted again by their secret group key, "
                         "totalled per group, the output policy's rules applied, shuffled "
                         "again, and only the released groups opened. Revealed to every "
                         "compute party: the number of groups in the result, never which "
                         "rows formed them. ")


def _grouping_rows(joined: _Joined, plan: JoinGroupsPlan
                   ) -> tuple[GroupRows, dict[str, int]]:
    """Step 2 and 3: one weighted row per row of the grouping table."""
    g = plan.group_side
    spread = joined.spread_back
    multiplicity = joined.multiplicity(g)[0]  # per key end
    stands_for = spread((multiplicity * joined.ends).reshape(1, -1))[0]
    member = joined.rows[g][0]  # 0/1: a row of the grouping table, passing its WHERE
    taking = member * (stands_for >= 1)
    weight = taking * stands_for
    counts, sums, flags, values = [], [], [], []
    order: dict[str, int] = {}
    for position, (k, a) in enumerate(plan._arguments()):
        if k == g:
            flag = joined.flags[g][a][0] * taking
            count = flag * stands_for
            counts.append(count)
            sums.append(count * joined.values[g][a])
            flags.append(flag)
            values.append(joined.values[g][a])
        else:
            others = _other_counts(joined, plan, g, k)
            count_end = joined.present[k][a][0] * joined.ends
            sum_end = joined.sums[k][a][0] * joined.ends
            if others is not None:
                count_end, sum_end = count_end * others, sum_end * others
            both = spread(SecretArray(joined.session, np.stack(
                [count_end.shares, sum_end.shares], axis=1), 0))
            count = member * both[0]
            counts.append(count)
            sums.append(member * SecretArray(joined.session, both.shares[:, 1],
                                             sum_end.fractional_bits))
            flags.append(count * 0)  # MIN and MAX of another table are refused
            values.append(count * 0)
        for aggregate in plan.query.aggregates:
            if aggregate.arguments and plan.argument_side[
                    aggregate.arguments[0].sql(dialect="duckdb")] == (k, a):
                order[aggregate.sql] = position
    key = joined.secret_keys[g]
    return GroupRows(key, taking, weight, counts, sums, flags, values,
                     orders=[s for s in sums]), order


def _other_counts(joined: _Joined, plan: JoinGroupsPlan, g: int, k: int
                  ) -> SecretArray | None:
    """Per key end: the product of the counts of the tables other than ``g`` and
    ``k`` (None when there are none)."""
    result: SecretArray | None = None
    for j in range(len(plan.sides)):
        if j not in (g, k):
            count = joined._count(j)[0]
            result = count if result is None else result * count
    return result
