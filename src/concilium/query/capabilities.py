"""What a plan needs of the protocol backend, checked before any data moves.

A backend states its capabilities (:data:`concilium.mpc.backend.CAPABILITIES`);
a query that needs one the consortium's protocol lacks is refused at planning
with :class:`~concilium.errors.UnsupportedQuery` naming the protocol and the
missing capability, never half-run.
"""

from __future__ import annotations

from concilium.errors import UnsupportedQuery
from concilium.governance.policy import OutputPolicy
from concilium.mpc.protocols import ProtocolSpec
from concilium.query.plans import QueryPlan

__all__ = ["check_capabilities", "required_capabilities"]


def required_capabilities(plan: QueryPlan, truncation: str = "reliable", *, outside: bool = False,
                          policy: OutputPolicy | None = None) -> dict[str, str]:
    """Each capability the plan needs, with the reason."""
    policy = policy or OutputPolicy()
    query = plan.query
    needs: dict[str, str] = {}
    if truncation in ("fast", "reliable"):
        needs[f"truncation:{truncation}"] = f"the session's {truncation} truncation"
    else:  # the exact floor: a reliable truncation and one comparison
        needs["truncation:reliable"] = "exact truncation"
        needs["boolean"] = "exact truncation compares"
    rows = plan.shares_rows
    if rows:
        needs["shuffle"] = ("a secure sort of the shared rows (quantiles, distinct counts, "
                            "secret-key groups, joins or dominance)")
    counts_only = all(a.function == "count" for a in query.aggregates)
    if (rows or query.group_by or query.having is not None or not counts_only
            or policy.min_cohort > 1 or policy.rounding is not None):
        needs.setdefault("boolean", "comparisons (groups that appear, NULL tests, HAVING, "
                                    "divisions, minima, the output policy)")
    if outside:
        needs["outside_parties"] = "owners or recipients that are not compute parties"
    return needs


def check_capabilities(plan: QueryPlan, spec: ProtocolSpec, truncation: str = "reliable", *,
                       outside: bool = False, policy: OutputPolicy | None = None) -> None:
    """Refuse the plan if the protocol lacks a capability it needs."""
    for capability, reason in required_capabilities(plan, truncation, outside=outside,
                                                    policy=policy).items():
        if capability not in spec.capabilities:
            raise UnsupportedQuery(f"protocol {spec.name} cannot run this query: it does not "
                                   f"support {capability}, which {reason} needs",
                                   construct=capability)
