"""The output policy's checks that need no cryptography: which aggregates,
columns and recipients a query may use, and whether it would output
per-record rows. They run when the query is planned, before any data moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlglot import exp

from concilium.errors import PolicyViolation
from concilium.governance.policy import OutputPolicy

__all__ = ["POLICY_NAMES", "check_policy"]

#: The policy's aggregate names for each internal statistic.
POLICY_NAMES = {"count": "count", "sum": "sum", "avg": "avg", "min": "min", "max": "max",
                "var_samp": "variance", "var_pop": "variance", "stddev_samp": "stddev",
                "stddev_pop": "stddev", "corr": "corr", "quantile": "median",
                "count_distinct": "count_distinct"}


def _columns(plan: Any) -> set[str]:
    query = plan.query
    nodes: list[exp.Expr] = [node for node, _ in query.select]
    nodes += [n for n in (query.where, query.having) if n is not None]
    nodes += list(getattr(query, "group_expressions", ()))
    for aggregate in query.aggregates:
        nodes += list(aggregate.arguments)
    names = {c.name.lower() for node in nodes for c in node.find_all(exp.Column)}
    if hasattr(plan, "unique"):  # a join: its keys and per-table filters
        for side in (plan.unique, plan.many):
            names.add(side.key.lower())
            if side.where is not None:
                names |= {c.name.lower() for c in side.where.find_all(exp.Column)}
    output_names = {name.lower() for _, name in query.select}
    return names - (output_names - names)


def check_policy(plan: Any, policy: OutputPolicy,
                 recipients: Sequence[str] | None = None) -> None:
    """Raise :class:`~concilium.errors.PolicyViolation` naming the first rule the
    query breaks."""
    if policy.allowed_aggregates is not None:
        for aggregate in plan.query.aggregates:
            name = POLICY_NAMES.get(aggregate.function, aggregate.function)
            quantile = aggregate.function == "quantile" and (
                {"median", "percentile_cont", "quantile"} & policy.allowed_aggregates)
            if name not in policy.allowed_aggregates and not quantile:
                raise PolicyViolation(f"the output policy does not allow {aggregate.sql} "
                                      f"(allowed: {', '.join(sorted(policy.allowed_aggregates))})")
    if policy.allowed_columns is not None:
        extra = sorted(_columns(plan) - policy.allowed_columns)
        if extra:
            raise PolicyViolation(f"the output policy does not allow column(s) "
                                  f"{', '.join(extra)}")
    if policy.allowed_recipients is not None and recipients is not None:
        refused = sorted({r.lower() for r in recipients} - policy.allowed_recipients)
        if refused:
            raise PolicyViolation(f"the output policy does not allow delivering results to "
                                  f"{', '.join(refused)}")
    if policy.metrics_only and getattr(plan.query, "secret_group", False):
        raise PolicyViolation("the output policy is metrics only: GROUP BY a secret key "
                              "would output one row per record or entity")
    summed = [a.sql for a in plan.query.aggregates if a.function in ("sum", "avg")]
    if policy.dominance is not None and summed and (
            hasattr(plan, "unique") or getattr(plan.query, "secret_group", False)):
        kind = "a JOIN" if hasattr(plan, "unique") else "GROUP BY a secret key"
        raise PolicyViolation(f"the output policy has a dominance rule, which cannot be "
                              f"enforced on {summed[0]} over {kind} yet; the query is refused "
                              "rather than run without it")
