"""A plan in words: what runs where, what is shared, what is revealed to whom."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from concilium.query.plans import QueryPlan

__all__ = ["explain"]


def explain(plan: QueryPlan, names: Mapping[int, str] | None = None,
            recipients: Sequence[int] | None = None) -> str:
    """A person-readable account of ``plan``; ``names`` maps parties to node names."""
    known = names or {}

    def who(party: int) -> str:
        return f"{known[party]} (party {party})" if party in known else f"party {party}"

    return plan.explain(who, recipients)
