"""Layer 6: SQL over secret tables.

* :mod:`~concilium.query.sql`: SQL (sqlglot) to a checked query;
* :mod:`~concilium.query.aggregates`: the aggregate registry;
* :mod:`~concilium.query.planner`: the plan kinds (:mod:`~concilium.query.plans`):
  partial aggregates and row statistics (:mod:`~concilium.query.aggregate_plan`),
  secret-key groups (:mod:`~concilium.query.secret_groups`), joins
  (:mod:`~concilium.query.join`);
* :mod:`~concilium.query.rules`: the output-policy engine;
* :mod:`~concilium.query.execute`: running a plan on a session;
* :mod:`~concilium.query.explain`: the plan in words, for a person.

Imports :mod:`concilium.data` and the layers below it.
"""

from concilium.query.catalog import TableEntry
from concilium.query.execute import run_plan
from concilium.query.planner import plan_query
from concilium.query.plans import QueryPlan
from concilium.query.sql import Query, parse_query

__all__ = ["Query", "QueryPlan", "TableEntry", "parse_query", "plan_query", "run_plan"]
