"""A plan in words: what runs where, what is shared, what is revealed to whom."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence

from concilium.query.join import JoinPlan
from concilium.query.plan import Plan

__all__ = ["explain"]

_FINISH = {
    "count": "sum of the owners' counts",
    "sum": "sum of the owners' sums",
    "avg": "sum / count (secure division)",
    "min": "secure minimum over the owners' minima (comparisons)",
    "max": "secure maximum over the owners' maxima (comparisons)",
    "var_samp": "parallel variance (Chan et al.): owners' squared deviations plus "
                "count-weighted squared mean differences, / (count - 1)",
    "var_pop": "parallel variance (Chan et al.), / count",
    "stddev_samp": "square root of the sample variance (secure sqrt)",
    "stddev_pop": "square root of the population variance (secure sqrt)",
    "corr": "parallel co-moments, / sqrt(Sxx) / sqrt(Syy) (secure roots and divisions)",
    "quantile": "secure sort of the shared rows, exact position, one-hot selection, "
                "interpolation",
    "count_distinct": "secure sort of the shared rows, run starts (secure equality) "
                      "counted per group",
}


def explain(plan: Plan | JoinPlan, names: Mapping[int, str] | None = None,
            recipients: Sequence[int] | None = None) -> str:
    """A person-readable account of ``plan``; ``names`` maps parties to node names."""
    names = names or {}

    def who(party: int) -> str:
        return f"{names[party]} (party {party})" if party in names else f"party {party}"

    if isinstance(plan, JoinPlan):
        return _explain_join(plan, who, recipients)
    if plan.query.secret_group:
        return _explain_secret_groups(plan, who, recipients)

    query = plan.query
    owners = ", ".join(who(p) for p in plan.entry.owners)
    groups = len(plan.groups)
    group_text = (f"the {groups} public groups of {', '.join(query.group_by)}"
                  if query.group_by else "the whole table (one group)")
    shared = "\n".join(f"     - {s.description}" for s in plan.statistics)
    if plan.row_sql:
        shared += ("\n     - and every row (filtered or not) of the arguments of MEDIAN, "
                   "PERCENTILE_CONT and COUNT(DISTINCT), with secret flags and group codes:\n"
                   + textwrap.indent(plan.row_sql, "         ")
                   + "\n       (each owner's row count is revealed; the rows are sorted "
                   "securely)")
    finish = "\n".join(f"     - {a.sql}: {_FINISH[a.function]}" for a in query.aggregates)
    having = ("" if query.having is None else
              f"\n     - HAVING {query.having.sql(dialect='duckdb')}: secure comparisons")
    appear = ("which of the groups appear in the result (non-empty"
              f"{' and passing HAVING' if query.having is not None else ''})"
              if query.group_by or query.having is not None else "nothing (one result row)")
    to = ("every compute party" if recipients is None
          else ", ".join(who(p) for p in recipients))
    outputs = ", ".join(name for _, name in query.select)
    local = textwrap.indent(plan.local_sql, "       ")
    count = len(plan.statistics) * groups
    return f"""Query
  {query.sql.strip()}

1. Locally, at each owner of {query.table} ({owners}), in DuckDB; nothing leaves the owner:
{local}

2. Shared by each owner as secret shares with the compute parties: {len(plan.statistics)} \
statistics for each of {group_text}, {count} values per owner whatever its data:
{shared}

3. Computed on secret shares by the compute parties:
{finish}{having}

4. Revealed
     - to every compute party: {appear}
     - to {to}: the selected columns ({outputs}) for those groups, and which of them are NULL
"""


def _explain_join(plan: JoinPlan, who: Callable[[int], str],
                  recipients: Sequence[int] | None) -> str:
    query = plan.query
    sides = []
    for side, role in ((plan.unique, "key unique"), (plan.many, "the other side")):
        owners = ", ".join(who(p) for p in side.entry.owners)
        local = textwrap.indent(side.local_sql(), "       ")
        sides.append(f"   {side.table} ({role}; owners {owners}):\n{local}")
    to = ("every compute party" if recipients is None
          else ", ".join(who(p) for p in recipients))
    finish = "\n".join(f"     - {a.sql}" for a in query.aggregates)
    return f"""Query
  {query.sql.strip()}

1. Locally, at each owner, in DuckDB: every row of its table with its key, whether it
   passes that table's WHERE, and the aggregate arguments; nothing leaves the owner yet:
{chr(10).join(sides)}

2. Shared as secret shares with the compute parties: all of those rows (so each table's
   row count is revealed, never how many rows pass the filters).

3. Computed on secret shares ({plan.kind} join): sort both tables' rows together by key
   (a secret shuffle, then comparisons of distinct shuffled rows: they reveal nothing),
   copy each unique row forward to the rows with its key (a segmented scan), mark matches
   (secure equality), then the aggregates:
{finish}

4. Revealed to {to}: the selected columns ({", ".join(n for _, n in query.select)}) and
   which of them are NULL.
"""


def _explain_secret_groups(plan: Plan, who: Callable[[int], str],
                           recipients: Sequence[int] | None) -> str:
    query = plan.query
    owners = ", ".join(who(p) for p in plan.entry.owners)
    to = ("every compute party" if recipients is None
          else ", ".join(who(p) for p in recipients))
    local = textwrap.indent(plan.row_sql or "", "       ")
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
   (secure equality), segmented sums so each group's last row holds its totals, then:
{finish}
   and the HAVING and SELECT expressions; shuffle again and open which rows are groups.

4. Revealed to every compute party: the number of groups in the result. To {to}: the
   selected columns ({", ".join(n for _, n in query.select)}), including the group keys.
"""
