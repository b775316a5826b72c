"""Planning: the one place that decides which plan kind a query is.

``plan_query(sql, tables, policy=...)`` parses and checks the SQL against the
catalog and returns a :class:`~concilium.query.plans.QueryPlan`:

* a join (``FROM a JOIN b ON ...``): :class:`~concilium.query.join.JoinPlan`;
* ``GROUP BY`` one secret key: :class:`~concilium.query.secret_groups.SecretGroupPlan`;
* otherwise, aggregates of one table in horizontal partitions:
  :class:`~concilium.query.aggregate_plan.AggregatePlan` (partial aggregates, or
  row statistics when rows must be shared).

``policy``: the output policy the plan must be able to enforce (a dominance
rule shares the rows of summed arguments; a minimum cohort counts the rows at
each MIN and MAX).
"""

from __future__ import annotations

from collections.abc import Mapping

from concilium.governance.policy import OutputPolicy
from concilium.query.aggregate_planning import plan_aggregates
from concilium.query.catalog import TableEntry
from concilium.query.join_planning import has_join, plan_join
from concilium.query.plans import QueryPlan
from concilium.query.secret_groups import plan_secret_groups
from concilium.query.sql import inline_with, parse_query

__all__ = ["plan_query"]


def plan_query(sql: str, tables: Mapping[str, TableEntry], *,
               policy: OutputPolicy | None = None) -> QueryPlan:
    """Check ``sql`` against the catalog and decide what runs where."""
    policy = policy or OutputPolicy()
    sql = inline_with(sql)
    if has_join(sql):
        return plan_join(sql, tables)
    query = parse_query(sql, {name: entry.schema for name, entry in tables.items()})
    entry = tables[query.table]
    if query.secret_group:
        return plan_secret_groups(query, entry)
    return plan_aggregates(query, entry, policy)
