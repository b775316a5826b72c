"""Layer 6: SQL over secret tables.

* :mod:`~concilium.query.sql`: SQL (sqlglot) to a checked query;
* :mod:`~concilium.query.plan`: what runs locally at each owner (DuckDB), what is
  shared, computed securely and revealed;
* :mod:`~concilium.query.execute`: running a plan on a session;
* :mod:`~concilium.query.explain`: the plan in words, for a person.

Imports :mod:`concilium.data` and the layers below it.
"""

from concilium.query.execute import run_plan
from concilium.query.plan import Plan, TableEntry, plan_query
from concilium.query.sql import Query, parse_query

__all__ = ["Plan", "Query", "TableEntry", "parse_query", "plan_query", "run_plan"]
