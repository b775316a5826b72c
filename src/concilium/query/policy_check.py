"""The output policy's checks at planning, before any data moves: which
aggregates, columns and recipients a query may use, whether it would output
per-record rows, and whether every rule that applies can be enforced on the
query's plan kind (:func:`concilium.query.rules.check_rules`). A rule that
cannot be enforced refuses the query; none is ever skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

from concilium.errors import PolicyViolation
from concilium.governance.policy import OutputPolicy
from concilium.query.aggregates import AGGREGATES, BY_NAME, SECRET_GROUPS
from concilium.query.plans import QueryPlan
from concilium.query.rules import check_rules

__all__ = ["POLICY_NAMES", "check_policy"]

#: The policy's aggregate name (for ``allowed_aggregates``) of each aggregate.
POLICY_NAMES = {spec.name: spec.policy_name for spec in AGGREGATES}

#: Names a policy may also use for quantiles.
_QUANTILE_NAMES = frozenset({"median", "percentile_cont", "quantile"})


def _allowed(function: str, allowed: frozenset[str]) -> bool:
    name = BY_NAME[function].policy_name if function in BY_NAME else function
    if function == "quantile":
        return bool(_QUANTILE_NAMES & allowed)
    return name in allowed or function in allowed


def check_policy(plan: QueryPlan, policy: OutputPolicy,
                 recipients: Sequence[str] | None = None) -> None:
    """Raise :class:`~concilium.errors.PolicyViolation` naming the first rule the
    query breaks or that its plan cannot enforce."""
    if policy.allowed_aggregates is not None:
        for aggregate in plan.query.aggregates:
            if not _allowed(aggregate.function, policy.allowed_aggregates):
                raise PolicyViolation(f"the output policy does not allow {aggregate.sql} "
                                      f"(allowed: {', '.join(sorted(policy.allowed_aggregates))})")
    if policy.allowed_columns is not None:
        extra = sorted(plan.columns() - policy.allowed_columns)
        if extra:
            raise PolicyViolation(f"the output policy does not allow column(s) "
                                  f"{', '.join(extra)}")
    if policy.allowed_recipients is not None and recipients is not None:
        refused = sorted({r.lower() for r in recipients} - policy.allowed_recipients)
        if refused:
            raise PolicyViolation(f"the output policy does not allow delivering results to "
                                  f"{', '.join(refused)}")
    if policy.metrics_only and plan.kind == SECRET_GROUPS:
        raise PolicyViolation("the output policy is metrics only: GROUP BY a secret key "
                              "would output one row per record or entity")
    check_rules(plan, policy)
    plan.refuse_rules(policy)
