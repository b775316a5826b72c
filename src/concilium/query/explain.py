"""A plan in words: what runs where, what is shared, what is revealed to whom."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

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
}


def explain(plan: Plan, names: Mapping[int, str] | None = None,
            recipients: Sequence[int] | None = None) -> str:
    """A person-readable account of ``plan``; ``names`` maps parties to node names."""
    names = names or {}

    def who(party: int) -> str:
        return f"{names[party]} (party {party})" if party in names else f"party {party}"

    query = plan.query
    owners = ", ".join(who(p) for p in plan.entry.owners)
    groups = len(plan.groups)
    group_text = (f"the {groups} public groups of {', '.join(query.group_by)}"
                  if query.group_by else "the whole table (one group)")
    shared = "\n".join(f"     - {s.description}" for s in plan.statistics)
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
